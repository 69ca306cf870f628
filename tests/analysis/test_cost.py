"""iaat_jax/analysis/cost.py: accelerators by their vendors' names, evaluation counted attack by
attack, and a plan's phases at the benchmark's FLOPs per step."""

import pytest

from iaat_jax import benchmark
from iaat_jax.analysis import cost
from iaat_jax.attacks import autoattack
from iaat_jax.configs import default
from iaat_jax.evaluation import evaluate


def test_accelerators_count_chips_as_their_vendors_name_them():
    v4 = cost.accelerator("v4-8")  # v4 names count TensorCores: 2 per chip
    assert (v4.chips, v4.peak) == (4, 4 * 275e12)
    assert cost.accelerator("v5litepod-16").chips == 16  # v5e names count chips
    assert cost.accelerator("h100x8").peak == 8 * 989e12
    assert cost.accelerator("h100", utilisation=0.5).utilisation == 0.5
    with pytest.raises(ValueError, match="unknown accelerator 'k80'"):
        cost.accelerator("k80")


def test_evaluation_is_counted_attack_by_attack():
    config = default.get_config()
    config.sweep_epsilons = (0.0, 0.1, 0.3)
    config.sweep_losses = ("ce", "margin")
    config.sweep_attack_steps = 20
    config.sweep_restarts = 2
    config.eval_suite = "smoke"  # apgd-ce 5, apgd-t 5 x 2 targets, fab-t 5 x 2, square 50
    config.eval_suite_epsilons = (0.3,)
    gradients, forwards = cost.final_eval_iterations(config, num_classes=10)
    # the sweep: 2 radii > 0 x 2 losses x 2 restarts x (20 steps, a clean pass and a check);
    # radius 0 reuses them; the suite: apgd-ce 5, apgd-t 5 x 2, fab-t 5 x 2 (and a forward
    # each), square 50 forwards
    assert gradients == 2 * 2 * 2 * 20 + (5 + 10 + 10)
    assert forwards == 2 * 2 * 2 * 2 + 10 + 50
    assert cost.final_eval_iterations(config, num_classes=2)[0] == 2 * 2 * 2 * 20 + 5 + 5 + 5
    assert [a.name for a in autoattack.SUITES["smoke"]] == list(autoattack.ATTACK_NAMES)
    assert len(evaluate.sweep_attacks(config)) == 6


def test_the_plan_counts_each_phase_at_the_benchmarks_flops():
    config = default.get_config()  # IAAT: 2 warm-up epochs of 50 steps, then 5 adapting
    found = cost.run_cost(config)
    adapting = benchmark.benchmark_method(config, "iaat", 0, 0, flops_only=True)
    assert found.steps_per_phase == {"warm-up": 100, "main": 250}
    assert found.flops_per_step["main"] == adapting["flops_per_step"]
    assert found.flops_per_step["warm-up"] < found.flops_per_step["main"] / 2
    assert found.train_flops == pytest.approx(
        100 * found.flops_per_step["warm-up"] + 250 * adapting["flops_per_step"]
    )
    # 2 checkpoints of 107,066 float32 parameters and their momentum (and a few hundred bytes
    # of BatchNorm statistics and the step), and the 4,000-entry radius table
    weights = 2 * (2 * 4 * 107_066 + 4 * 4000) + 4 * 4000
    assert weights <= found.checkpoint_bytes <= weights + 2 * 1024
    machine = cost.accelerator("v4-8")
    assert found.hours(machine) == pytest.approx(found.flops / (4 * 275e12 * 0.31) / 3600)
