"""Measuring a trained run: evaluate.py (suites, PGD sweeps, eval.json) and model_card.py."""
