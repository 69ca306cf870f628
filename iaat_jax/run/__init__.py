"""Running a training: train.py (the loop) with its experiment (model, optimizer, state),
checkpoint.py, workdir.py, metrics_log.py, stop.py (signals, non-finite loss), config_checks.py,
and the plumbing everything uses: files.py (local or gs://) and sharding.py (the device mesh)."""
