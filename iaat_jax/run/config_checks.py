"""Checks of a config and a workdir before anything runs: one clear line per problem."""

import math
import os
import uuid

import ml_collections
from etils import epath

from iaat_jax.attacks import autoattack, pgd
from iaat_jax.data.datasets import DATASETS
from iaat_jax.errors import ConfigError
from iaat_jax.method import attack_batchnorm, registry
from iaat_jax.models import MODELS
from iaat_jax.run import files
from iaat_jax.run.workdir import RENAMED_FIELDS

LR_SCHEDULES = ("cosine", "piecewise", "constant")
ATTACK_BATCHNORM = attack_batchnorm.POLICIES
OPTIMIZERS = ("sgd", "adamw")


def _one_of(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}: choose one of {', '.join(map(str, choices))} "
            f"(--config.{name}=...)"
        )


def _at_least(config: ml_collections.ConfigDict, name: str, minimum) -> None:
    if config[name] < minimum:
        raise ConfigError(f"config.{name}={config[name]} must be >= {minimum}")


def _finite_numbers(config: ml_collections.ConfigDict) -> None:
    """Every number of the config (also inside tuples) is finite."""
    for name, value in config.items():
        for number in value if isinstance(value, tuple | list) else (value,):
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(f"config.{name}={value} is not a finite number: give one")


def validate_config(
    config: ml_collections.ConfigDict, device_count: int, training: bool = True
) -> None:
    """Raise ConfigError for the first field that cannot work on `device_count` devices
    (`training` False: for evaluation, where the training batch plays no part)."""
    _finite_numbers(config)
    for old, new in RENAMED_FIELDS.items():  # set in Python: a command line is renamed for you
        if old in config:
            raise ConfigError(f"config.{old} is now config.{new}: set that field instead")
    _one_of("dataset", config.dataset, sorted(DATASETS))
    _one_of("model", config.model, sorted(MODELS))
    _one_of("method", config.method, tuple(registry.METHODS))
    _one_of("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    if config.attack_batchnorm == "batch":
        raise ConfigError(
            "config.attack_batchnorm='batch' is now called 'global' (or 'local': each "
            "device's own batch statistics): use --config.attack_batchnorm=global"
        )
    _one_of("attack_batchnorm", config.attack_batchnorm, ATTACK_BATCHNORM)
    _one_of("optimizer", config.optimizer, OPTIMIZERS)
    if not 0.0 <= config.epsilon <= 1.0:
        raise ConfigError(
            f"config.epsilon={config.epsilon} is outside [0, 1]: pixels are in [0, 1], "
            "so give the radius on that scale (e.g. 8/255 = 0.0314)"
        )
    if config.eval_corruptions and config.dataset != "cifar10":
        raise ConfigError(
            f"config.eval_corruptions needs dataset cifar10, not {config.dataset}: "
            "it evaluates on cifar10_corrupted"
        )
    if not 0.0 < config.iaat_beta <= 1.0:
        raise ConfigError(f"config.iaat_beta={config.iaat_beta} must be in (0, 1]")
    if config.trades_beta < 0.0:
        raise ConfigError(
            f"config.trades_beta={config.trades_beta} is negative: give the KL term's weight, "
            ">= 0 (1.0 as the TRADES authors on MNIST, 6.0 on CIFAR-10)"
        )
    for name in ("batch_size", "eval_batch_size") if training else ("eval_batch_size",):
        if config[name] % device_count:
            raise ConfigError(
                f"config.{name}={config[name]} is not divisible by the {device_count} devices: "
                f"use a multiple of {device_count}"
            )
    for name, minimum in (
        ("batch_size", 1),
        ("eval_batch_size", 1),
        ("num_epochs", 1),
        ("attack_steps", 1),
        ("eval_attack_steps", 1),
        ("iaat_warmup_epochs", 0),
        ("epsilon_ramp_epochs", 0),
        ("iaat_gamma", 0.0),
        ("attack_step_min", 0.0),
        ("learning_rate", 0.0),
        ("log_every_steps", 1),
        ("lr_warmup_epochs", 0),
        ("checkpoint_every_steps", 0),
        ("checkpoints_to_keep", 1),
    ):
        _at_least(config, name, minimum)
    if registry.method_of(config).policy.warmup and config.iaat_warmup_epochs > config.num_epochs:
        raise ConfigError(
            f"config.iaat_warmup_epochs={config.iaat_warmup_epochs} exceeds "
            f"config.num_epochs={config.num_epochs}: use fewer warm-up epochs or more epochs"
        )
    if config.attack_batchnorm_updates and config.attack_batchnorm == "running":
        raise ConfigError(
            "config.attack_batchnorm_updates=True needs batch statistics in the attacks: "
            "add --config.attack_batchnorm=global (or local, or drop the updates)"
        )
    if config.probe_steps is not None and config.probe_steps < 1:
        raise ConfigError(
            f"config.probe_steps={config.probe_steps} must be >= 1 (or None: attack_steps)"
        )
    for loss in config.sweep_losses:
        _one_of("sweep_losses entry", loss, sorted(pgd.ATTACK_LOSSES))
    if config.eval_suite:
        _one_of("eval_suite", config.eval_suite, sorted(autoattack.SUITES))
    num_classes = DATASETS[config.dataset].num_classes
    if config.eval_suite and num_classes < 4:  # targeted DLR ranks 4 logits
        raise ConfigError(
            f"config.eval_suite={config.eval_suite!r} needs >= 4 classes, {config.dataset} has "
            f"{num_classes}: use --config.eval_suite='' (the PGD sweep alone)"
        )
    for eps in config.eval_suite_epsilons:
        if not 0.0 < eps <= 1.0:
            raise ConfigError(f"config.eval_suite_epsilons entry {eps} must be in (0, 1]")
    num_train = DATASETS[config.dataset].num_train
    if not 0 <= config.get("validation_examples", 0) < num_train:
        raise ConfigError(
            f"config.validation_examples={config.validation_examples} must be in [0, {num_train}) "
            f"for {config.dataset}: hold out fewer of its {num_train} training examples"
        )
    if config.epsilon_max is not None and config.epsilon_max < 0:
        raise ConfigError(f"config.epsilon_max={config.epsilon_max} must be >= 0 (or unset)")


def check_batch_fits(config: ml_collections.ConfigDict, num_train: int, steps_per_epoch: int):
    """Raise ConfigError if an epoch holds no full global batch."""
    if steps_per_epoch == 0:
        raise ConfigError(
            f"config.batch_size={config.batch_size} exceeds the {num_train} training examples: "
            "use a smaller batch (or hold out fewer with config.validation_examples)"
        )


def check_workdir(workdir: str) -> epath.Path:
    """Create `workdir` if needed and prove it is writable; return it as an absolute path.

    Raises ConfigError if it is not writable. Local paths are made absolute (orbax needs it);
    URLs such as gs://bucket/run are kept.
    """
    path = epath.Path(workdir if files.is_url(workdir) else os.path.abspath(workdir))
    probe = files.join(workdir, f".write_probe_{uuid.uuid4().hex}")
    try:
        files.makedirs(workdir)
        files.write_text(probe, "ok")
        files.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"workdir {workdir} is not writable ({error.strerror or error}): "
            "pass a directory you can write with --workdir=..."
        ) from error
    return path
