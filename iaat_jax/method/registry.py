"""A training method = a radius policy x an attack objective x a training loss, by name.

- The **radius policy** decides each example's radius: none (clean training), fixed (PGD-AT,
  TRADES, MART: config.epsilon, after an optional ramp) or IAAT's adaptive rule (a warm-up,
  then two cross-entropy PGD probes around each example's previous radius, whatever the
  objective: iaat_jax.method.epsilon states the rule).
- The **attack objective** finds the training input at that radius: cross-entropy from a
  uniform start (Madry et al.), KL to the clean prediction from a Gaussian start (TRADES), or
  cross-entropy from the Gaussian start (MART); none for clean training.
- The **training loss** trains on it, and declares its train-mode passes: the adversarial
  input only, or the clean input then the adversarial one (the authors' order, which sets the
  weights of BatchNorm's running-statistics updates).

The train step (iaat_jax.method.step) reads a method only through these parts; so do the config
checks, the model card, the report and the benchmark. A new method is one line of METHODS.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from iaat_jax.attacks import pgd
from iaat_jax.method import epsilon, mart, trades


def _untouched(passes, config, eps_prev, clean_correct, fixed, warming_up, stats):
    return eps_prev, stats  # clean training: the table passes through


def _fixed(passes, config, eps_prev, clean_correct, fixed, warming_up, stats):
    return jnp.full_like(eps_prev, fixed), stats


def _adaptive(passes, config, eps_prev, clean_correct, fixed, warming_up, stats):
    """IAAT's rule: in warm-up the (ramped) epsilon where the clean check is right, else
    probes at eps_prev and eps_prev + gamma, then grow, keep or shrink (iaat_jax.method.epsilon)."""
    if warming_up:
        return epsilon.warmup_radius(clean_correct, fixed), stats
    steps = config.probe_steps or config.attack_steps
    at_prev, stats = passes.pgd(eps_prev, pgd.Stream.PROBE_PREV, stats, steps)
    at_high, stats = passes.pgd(eps_prev + config.iaat_gamma, pgd.Stream.PROBE_HIGH, stats, steps)
    prev_correct, stats = passes.correct(at_prev, stats)
    high_correct, stats = passes.correct(at_high, stats)
    radius = epsilon.adapted_radius(
        eps_prev,
        clean_correct,
        prev_correct,
        high_correct,
        gamma=config.iaat_gamma,
        beta=config.iaat_beta,
        eps_max=config.epsilon_max,
    )
    return radius, stats


@dataclasses.dataclass(frozen=True)
class RadiusPolicy:
    """How a step sets each example's radius:
    `radius(passes, config, eps_prev, clean_correct, fixed, warming_up, stats) -> (radius [B],
    statistics after any probe passes)`, `fixed` being the (ramped) config.epsilon of the step
    and `passes` the step's PGD and checks (iaat_jax.method.step.Passes). `needs_clean_check`: it
    reads the clean check (a train-mode pass before the attacks); `warmup`: it has warm-up
    epochs (their own program); `ramp`: it follows config.epsilon_ramp_epochs."""

    name: str
    description: str
    radius: Callable
    needs_clean_check: bool = False
    warmup: bool = False
    ramp: bool = False


NO_RADIUS = RadiusPolicy("none", "none (clean training)", _untouched)
FIXED_RADIUS = RadiusPolicy("fixed", "fixed: config.epsilon, after the ramp", _fixed, ramp=True)
ADAPTIVE_RADIUS = RadiusPolicy(
    "adaptive",
    "IAAT's per-example rule: warm-up, then grow, keep or shrink by gamma, smoothed by beta",
    _adaptive,
    needs_clean_check=True,
    warmup=True,
    ramp=True,
)


def _clean_images(passes, radius, stats):
    return passes.images, stats


def _cross_entropy(passes, radius, stats):
    return passes.pgd(radius, pgd.Stream.TRAIN_ATTACK, stats)


def _cross_entropy_from_noise(passes, radius, stats):
    return passes.pgd(radius, pgd.Stream.TRAIN_ATTACK, stats, start=trades.gaussian_start)


def _kl_to_clean(passes, radius, stats):
    clean_logits, stats = passes.forward(passes.images, stats)  # one more pass for the target
    return passes.pgd(
        radius,
        pgd.Stream.TRAIN_ATTACK,
        stats,
        loss=lambda logits, clean: trades.kl_divergence(clean, logits),
        targets=jax.lax.stop_gradient(clean_logits),
        start=trades.gaussian_start,
    )


@dataclasses.dataclass(frozen=True)
class AttackObjective:
    """What the training attack ascends, from which start:
    `attack(passes, radius, stats) -> (training inputs, statistics after its passes)`."""

    name: str
    description: str
    attack: Callable


NO_ATTACK = AttackObjective("none", "none: the clean images", _clean_images)
CROSS_ENTROPY_ATTACK = AttackObjective(
    "ce", "PGD on the cross-entropy from a uniform start", _cross_entropy
)
KL_ATTACK = AttackObjective(
    "kl", "PGD on KL(clean || adversarial) from a Gaussian start", _kl_to_clean
)
CE_GAUSSIAN_ATTACK = AttackObjective(
    "ce_gaussian", "PGD on the cross-entropy from a Gaussian start", _cross_entropy_from_noise
)


@dataclasses.dataclass(frozen=True)
class TrainingLoss:
    """The per-example loss [B] from the training passes' logits; `clean_pass`: a clean
    train-mode pass runs before the adversarial one, and is the step's clean check."""

    name: str
    description: str
    per_example: Callable  # (clean_logits or None, logits, labels, config) -> [B]
    clean_pass: bool = False
    parameter: str | None = None  # the config field of its weight


CROSS_ENTROPY_LOSS = TrainingLoss(
    "ce",
    "cross-entropy on the training input",
    lambda _, logits, y, c: pgd.cross_entropy(logits, y),
)
TRADES_LOSS = TrainingLoss(
    "trades",
    "CE(clean) + trades_beta * KL(clean || adversarial)",
    lambda clean, logits, y, c: trades.trades_loss(clean, logits, y, c.trades_beta),
    clean_pass=True,
    parameter="trades_beta",
)
MART_LOSS = TrainingLoss(
    "mart",
    "BCE(adversarial) + mart_beta * KL(clean || adversarial) * (1 - p_y(clean))",
    lambda clean, logits, y, c: mart.mart_loss(clean, logits, y, c.mart_beta),
    clean_pass=True,
    parameter="mart_beta",
)


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method: its parts, how figures name it and where it comes from."""

    name: str
    label: str
    policy: RadiusPolicy
    objective: AttackObjective
    loss: TrainingLoss
    source: str
    frontier: bool = False  # its fixed radii draw the Pareto frontier (PGD-AT)

    @property
    def attack_passes(self) -> bool:
        """It runs forward passes before training: a clean check or an attack."""
        return self.policy.needs_clean_check or self.objective is not NO_ATTACK

    @property
    def adaptive(self) -> bool:
        """It keeps a radius per example (the epsilon table's figures are about it)."""
        return self.policy is ADAPTIVE_RADIUS


IAAT = "Balaji, Goldstein and Hoffman, arXiv 1910.08051 (2019)"
TRADES = "Zhang et al., ICML 2019"
MART = "Wang et al., ICLR 2020"
METHODS = {
    method.name: method
    for method in (
        Method(
            "clean", "clean training", NO_RADIUS, NO_ATTACK, CROSS_ENTROPY_LOSS, "natural training"
        ),
        Method(
            "pgd",
            "PGD-AT",
            FIXED_RADIUS,
            CROSS_ENTROPY_ATTACK,
            CROSS_ENTROPY_LOSS,
            "Madry et al., ICLR 2018",
            frontier=True,
        ),
        Method("trades", "TRADES", FIXED_RADIUS, KL_ATTACK, TRADES_LOSS, TRADES),
        Method("mart", "MART", FIXED_RADIUS, CE_GAUSSIAN_ATTACK, MART_LOSS, MART),
        Method("iaat", "IAAT", ADAPTIVE_RADIUS, CROSS_ENTROPY_ATTACK, CROSS_ENTROPY_LOSS, IAAT),
        Method(
            "iaat_trades",
            "IAAT-TRADES",
            ADAPTIVE_RADIUS,
            KL_ATTACK,
            TRADES_LOSS,
            f"{IAAT}; {TRADES}",
        ),
        Method(
            "iaat_mart",
            "IAAT-MART",
            ADAPTIVE_RADIUS,
            CE_GAUSSIAN_ATTACK,
            MART_LOSS,
            f"{IAAT}; {MART}",
        ),
    )
}


def method_of(config: ml_collections.ConfigDict | dict) -> Method:
    """The registered method a config names (config_checks refuses unknown names first)."""
    return METHODS[config["method"]]
