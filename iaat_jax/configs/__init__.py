"""The experiment configs, one file per setting (`--config=configs/NAME.py` in a checkout,
where configs/ links here; installed: `--config=$(python -c "import iaat_jax.configs as c;
print(c.__path__[0])")/NAME.py`)."""
