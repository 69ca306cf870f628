"""The method: what a training step does to each example.

registry.py   a method = radius policy x attack objective x training loss, by name
epsilon.py    the per-example radius table and IAAT's rule that adapts it
table_feed.py the host-side table: gather radii by example id, scatter the new ones
step.py       the jitted, data-parallel train step that runs the method's parts
trades.py, mart.py   the TRADES and MART losses; attack_batchnorm.py: BatchNorm in attacks
"""
