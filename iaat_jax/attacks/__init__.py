"""The attacks, all with a radius per example.

pgd.py         PGD and APGD, and the losses, projections and random streams every attack shares
fab.py, square.py   FAB-T (minimum-norm) and Square (query-only)
autoattack.py  the suites (standard AutoAttack, its CPU budget, APGD only) run in order
sanity.py      AutoAttack's checks that flag gradient masking and randomness
"""
