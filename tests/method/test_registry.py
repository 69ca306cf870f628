"""The method registry: every method is its three parts, everything that names a method reads
them, and a method added by one registry line trains (its parts' behaviour is tested in
test_step.py, test_trades.py and test_mart.py)."""

import ast

import jax
import numpy as np
import pytest
from conftest import REPO
from test_step import B, fresh_state, one_step

from iaat_jax import errors
from iaat_jax.evaluation import model_card
from iaat_jax.method import registry
from iaat_jax.method import step as step_lib
from iaat_jax.run import config_checks, sharding


def test_the_registry_holds_the_papers_methods_and_their_combinations():
    table = {
        name: (m.policy.name, m.objective.name, m.loss.name) for name, m in registry.METHODS.items()
    }
    assert table == {
        "clean": ("none", "none", "ce"),
        "pgd": ("fixed", "ce", "ce"),
        "trades": ("fixed", "kl", "trades"),
        "mart": ("fixed", "ce_gaussian", "mart"),
        "iaat": ("adaptive", "ce", "ce"),
        "iaat_trades": ("adaptive", "kl", "trades"),
        "iaat_mart": ("adaptive", "ce_gaussian", "mart"),
    }
    assert [m.name for m in registry.METHODS.values() if m.frontier] == ["pgd"]


def test_no_module_outside_the_registry_tests_a_method_by_its_name():
    """A string comparison with a method's name (`config.method == "iaat"`, `run.method in
    (...)`) anywhere in the package but method/registry.py would be a second home for one."""
    names = set(registry.METHODS)
    found = []
    for path in sorted((REPO / "iaat_jax").rglob("*.py")):
        if path.relative_to(REPO / "iaat_jax").as_posix() == "method/registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                constants = [
                    c.value
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                ]
                if names & set(constants):
                    found.append(f"{path.name}:{node.lineno}")
    assert not found, found


def test_a_method_added_by_one_line_is_checked_and_trains(fast_config, monkeypatch):
    """PGD-AT from TRADES's Gaussian start, registered in one line: the config checks accept
    it, its step runs at the fixed radius, and its model card describes its parts."""
    added = registry.Method(
        "pgd_gaussian",
        "PGD-AT (Gaussian start)",
        registry.FIXED_RADIUS,
        registry.CE_GAUSSIAN_ATTACK,
        registry.CROSS_ENTROPY_LOSS,
        "a test",
    )
    monkeypatch.setitem(registry.METHODS, "pgd_gaussian", added)
    fast_config.method = "pgd_gaussian"
    fast_config.epsilon_ramp_epochs = 0
    config_checks.validate_config(fast_config, jax.device_count())
    _, radii, metrics = one_step(fast_config, 1, 0, np.zeros(B, np.float32))
    np.testing.assert_allclose(radii, fast_config.epsilon)
    assert np.isfinite(metrics["train_loss"]) and "train_clean_accuracy" not in metrics
    model, _ = fresh_state(fast_config)
    mesh = sharding.make_mesh(jax.devices()[:1])
    step = step_lib.make_train_step(model, fast_config, mesh, steps_per_epoch=10)
    assert set(step.jitted) == {step_lib.MAIN}  # a fixed radius: one program, no warm-up
    fast_config.method = "madry"
    with pytest.raises(errors.ConfigError, match="unknown method 'madry'"):
        config_checks.validate_config(fast_config, jax.device_count())


def test_the_model_card_describes_the_parts_and_the_losss_weight(fast_config):
    fast_config.method = "iaat_mart"
    results = {"clean_accuracy": 0.9, "num_examples": 10, "checkpoint_step": 5}
    card = model_card.model_card(fast_config, results, np.full(4000, 0.2, np.float32), 60.0)
    assert "- Method: IAAT-MART (" in card
    assert registry.ADAPTIVE_RADIUS.description in card and registry.MART_LOSS.description in card
    assert "IAAT: gamma" in card and f"- mart_beta {fast_config.mart_beta}" in card
