"""Config and workdir checks: one clear error naming the field and the fix, before any work."""

import pytest
from conftest import REPO, load_config

from iaat_jax import errors
from iaat_jax.run import config_checks, train


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dataset", "cifar1O", "unknown dataset 'cifar1O'"),
        ("model", "resnet9000", "unknown model 'resnet9000'"),
        ("method", "madry", "unknown method 'madry'"),
        ("trades_beta", -1.0, "trades_beta=-1.0 is negative"),
        ("epsilon", 8.0, "outside \\[0, 1\\]"),
        ("epsilon", -0.1, "outside \\[0, 1\\]"),
        ("batch_size", 100, "batch_size=100 is not divisible by the 8 devices"),
        ("optimizer", "adam", "unknown optimizer 'adam'"),
        ("attack_batchnorm", "frozen", "unknown attack_batchnorm 'frozen'"),
        ("attack_batchnorm", "batch", "'batch' is now called 'global'"),
        ("probe_steps", 0, "probe_steps=0 must be >= 1"),
        ("iaat_beta", 0.0, "iaat_beta=0.0 must be in \\(0, 1\\]"),
        ("attack_steps", 0, "attack_steps=0 must be >= 1"),
        ("iaat_gamma", float("nan"), "config.iaat_gamma=nan is not a finite number"),
        ("learning_rate", float("inf"), "config.learning_rate=inf is not a finite number"),
        ("iaat_warmup_epochs", 3, "iaat_warmup_epochs=3 exceeds config.num_epochs=2"),
        ("attack_batchnorm_updates", True, "attack_batchnorm_updates=True needs batch statistics"),
        ("epsilon_ramp_epochs", -1, "epsilon_ramp_epochs=-1 must be >= 0"),
        ("eval_suite", "autoatack", "unknown eval_suite 'autoatack'"),
        ("eval_suite_epsilons", (0.0,), "eval_suite_epsilons entry 0.0 must be in"),
        ("validation_examples", 4000, "validation_examples=4000 must be in \\[0, 4000\\)"),
        ("validation_examples", -1, "validation_examples=-1 must be in"),
        ("beta", 0.1, "config.beta is now config.iaat_beta: set that field instead"),
    ],
)
def test_bad_config_is_one_clear_error(fast_config, field, value, message):
    fast_config[field] = value
    with pytest.raises(errors.ConfigError, match=message):
        config_checks.validate_config(fast_config, device_count=8)


def test_an_unwritable_workdir_is_a_clear_error(fast_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(errors.ConfigError, match="not writable"):
        train.train_and_evaluate(fast_config, str(blocker / "run"))
    assert blocker.read_text() == "not a directory"


def test_a_batch_larger_than_the_training_split_is_a_clear_error(fast_config, tmp_path):
    fast_config.batch_size = 4008  # MNIST-5k has 4,000 training digits
    with pytest.raises(errors.ConfigError, match="exceeds the 4000 training examples"):
        train.train_and_evaluate(fast_config, str(tmp_path))


def test_every_field_of_the_default_config_has_a_comment():
    """README promises that configs/default.py documents each field in a one-line comment."""
    lines = (REPO / "configs" / "default.py").read_text().splitlines()
    undocumented = [
        line.split("=")[0].strip()
        for line in lines
        if line.strip().startswith("config.") and "=" in line and "#" not in line
    ]
    assert not undocumented, f"fields without a comment: {undocumented}"


@pytest.mark.parametrize("device_count", [1, 2, 4, 8])
def test_the_default_config_fits_one_two_four_and_eight_devices(device_count):
    config_checks.validate_config(load_config(), device_count)  # raises if it does not fit
