"""Robust evaluation: exact on a linear model, monotone in restarts, eval.json as measured."""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from linear_oracle import SHAPE, Linear, N, brute_force_robust, state_of

from iaat_jax import models
from iaat_jax.evaluation import evaluate
from iaat_jax.run import sharding


def batches_of(images, labels, size=32):
    for start in range(0, N, size):
        yield {
            "image": images[start : start + size],
            "label": labels[start : start + size],
            "id": np.arange(start, start + size),
            "mask": np.ones(size, np.float32),
        }


@pytest.mark.parametrize("num_devices", [1, 8])
def test_pgd_evaluation_equals_the_brute_force_worst_case_on_a_linear_model(num_devices):
    rng = np.random.default_rng(0)
    images = rng.random((N, *SHAPE), dtype=np.float32)
    model = Linear()
    params = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE)), train=False)["params"]
    labels = np.asarray(jnp.argmax(model.apply({"params": params}, images, train=False), -1))
    labels = labels.astype(np.int32)  # all clean-correct; robustness decides
    state = state_of(model, {"params": params})
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    attack_list = [
        evaluate.Attack(loss, eps, steps=10, step_size=eps / 4)
        for eps in (0.02, 0.05, 0.1, 0.2)
        for loss in ("ce", "margin")
    ]
    results = evaluate.measure(
        sharding.replicate(state, mesh),
        model,
        mesh,
        batches_of(images, labels),
        attack_list,
        sharding.replicate(jax.random.key(1), mesh),
    )
    weights, bias = np.asarray(params["Dense_0"]["kernel"]), np.asarray(params["Dense_0"]["bias"])
    assert results["clean_accuracy"] == 1.0
    fractions = []
    for row in results["worst_case"]:
        expected = brute_force_robust(weights, bias, images, labels, row["epsilon"]).mean()
        assert row["robust_accuracy"] == pytest.approx(expected, abs=1e-9)
        fractions.append(expected)
    assert fractions[0] > fractions[-1]  # the radii span easy and hard cases
    for attack in results["attacks"]:  # each loss alone also finds the exact worst case here
        expected = brute_force_robust(weights, bias, images, labels, attack["epsilon"]).mean()
        assert attack["robust_accuracy"] == pytest.approx(expected, abs=1e-9)


def test_an_example_misclassified_clean_is_never_robust_even_where_noise_fixes_it():
    # a two-class linear model and images near its boundary, some on the wrong side: with
    # step size 0 the attack is its random start, which moves some of the wrong ones back to
    # the right side. Robust means right clean AND at every point the attack visited.
    rng = np.random.default_rng(5)
    images = (0.5 + 0.05 * rng.normal(size=(N, *SHAPE))).astype(np.float32)
    model = Linear()
    params = model.init(jax.random.key(2), jnp.zeros((1, *SHAPE)), train=False)["params"]
    kernel = params["Dense_0"]["kernel"]
    params = {"Dense_0": {"kernel": kernel, "bias": -0.5 * kernel.sum(0)}}  # boundary at 0.5
    predicted = np.asarray(jnp.argmax(model.apply({"params": params}, images, train=False), -1))
    labels = predicted.astype(np.int32)
    labels[::3] = 1 - labels[::3]  # a third misclassified clean
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = sharding.replicate(state_of(model, {"params": params}), mesh)
    key = sharding.replicate(jax.random.key(3), mesh)
    attack = evaluate.Attack("ce", 0.3, steps=1, step_size=0.0, restarts=1)
    results = evaluate.measure(state, model, mesh, batches_of(images, labels), [attack], key)
    clean, robust = results["flags"]["clean"], results["flags"]["robust"][0.3]
    np.testing.assert_array_equal(clean, predicted == labels)
    assert not np.any(robust & ~clean)
    assert 0 < robust.mean() < clean.mean()  # the noise broke some right ones too


def test_each_restart_draws_a_new_start_and_an_example_must_survive_all():
    # step size 0: each restart is only its random start, so restarts matter by design; an
    # attack that reused one start for every restart (or ran one restart) would not gain.
    rng = np.random.default_rng(2)
    images = rng.random((N, 28, 28, 1), dtype=np.float32)
    model = models.create_model("small_cnn", 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    labels = np.asarray(jnp.argmax(model.apply(variables, images, train=False), -1))
    labels = labels.astype(np.int32)  # every example starts correct
    mesh = sharding.make_mesh(jax.devices()[:1])
    state = sharding.replicate(state_of(model, variables), mesh)
    key = sharding.replicate(jax.random.key(3), mesh)

    def robust_accuracy(restarts):
        attack = evaluate.Attack("ce", 0.4, steps=1, step_size=0.0, restarts=restarts)
        results = evaluate.measure(state, model, mesh, batches_of(images, labels), [attack], key)
        return results["attacks"][0]["robust_accuracy"]

    one, eight = robust_accuracy(1), robust_accuracy(8)
    assert 0.0 < eight < one < 1.0  # noise alone fools some examples, more draws fool more


@pytest.mark.slow  # trains two runs (shared fixture), about a minute
def test_eval_json_holds_what_was_measured(trained_runs):
    workdir, results = trained_runs["iaat"]
    saved = json.loads((workdir / "eval.json").read_text())
    assert saved["clean_accuracy"] == pytest.approx(results["clean_accuracy"])
    assert [r["epsilon"] for r in saved["worst_case"]] == [0.0, 0.15, 0.3]
    assert saved["worst_case"][0]["robust_accuracy"] == pytest.approx(saved["clean_accuracy"])
    robust = [r["robust_accuracy"] for r in saved["worst_case"]]
    assert robust[0] >= robust[1] >= robust[2]
    for attack in saved["attacks"]:
        assert {
            "loss",
            "epsilon",
            "steps",
            "step_size",
            "restarts",
            "robust_accuracy",
        } <= attack.keys()
        worst = next(r for r in saved["worst_case"] if r["epsilon"] == attack["epsilon"])
        assert worst["robust_accuracy"] <= attack["robust_accuracy"] + 1e-12
    assert saved["checkpoint_step"] == 50 and saved["method"] == "iaat"


def test_corruption_accuracy_averages_every_corruption_and_severity(monkeypatch):
    from conftest import load_config

    from iaat_jax.data import input_pipeline
    from iaat_jax.data.datasets import CIFAR10_CORRUPTIONS

    # the corrupted sets' TFDS reading has its own test (test_input_pipeline); here each set is
    # one synthetic batch whose labels are all 0, so the accuracy per set is predictable
    def fake_batches(config, name, process_index=0, process_count=1):
        rng = np.random.default_rng(len(name))
        batch = {
            "image": rng.random((16, 32, 32, 3), dtype=np.float32),
            "label": np.zeros(16, np.int32),
            "id": np.arange(16),
            "mask": np.ones(16, np.float32),
        }
        return 16, iter([batch])

    monkeypatch.setattr(input_pipeline, "corrupted_eval_batches", fake_batches)
    config = load_config("cifar10")
    model = models.SmallCNN(num_classes=10)  # any 32x32x3 classifier will do
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
    state = state_of(model, variables)
    mesh = sharding.make_mesh(jax.devices()[:1])
    result = evaluate.corruption_accuracy(
        config,
        sharding.replicate(state, mesh),
        model,
        mesh,
        sharding.replicate(jax.random.key(0), mesh),
    )
    names = [f"{c}_{s}" for c in CIFAR10_CORRUPTIONS for s in range(1, 6)]
    assert sorted(result["accuracy"]) == sorted(names) and len(names) == 95
    for name, accuracy in result["accuracy"].items():  # the share of images predicted as 0
        _, batches = fake_batches(config, name)
        images = next(batches)["image"] / np.float32(255)
        predicted = np.argmax(np.asarray(model.apply(variables, images, train=False)), -1)
        assert accuracy == pytest.approx(np.mean(predicted == 0))
    assert result["mean_accuracy"] == pytest.approx(np.mean(list(result["accuracy"].values())))


@pytest.mark.slow  # uses the trained runs (shared fixture) and attacks 400 digits 8 times
def test_apgd_worst_case_is_never_above_pgd20_on_a_trained_default_model(trained_runs, data_dir):
    from conftest import load_config

    from iaat_jax.attacks import autoattack
    from iaat_jax.run import experiment

    workdir, _ = trained_runs["pgd"]
    config = load_config()
    config.update(data_dir=data_dir, method="pgd", batch_size=80)
    data = experiment.data_source(config)
    mesh = sharding.make_mesh()
    parts = experiment.create_experiment(config, data, mesh)
    state, _ = evaluate.restore_checkpoint(workdir, parts.state, data.num_train)
    key = sharding.replicate(jax.random.key(0), mesh)
    batches = list(itertools.islice(data.eval_batches(), 2))  # 400 test digits
    eps = 0.2
    attack = evaluate.Attack.with_training_step_size("ce", eps, 20, 0.03)
    pgd = evaluate.measure(state, parts.model, mesh, batches, [attack], key)
    pgd20 = pgd["worst_case"][0]["robust_accuracy"]
    suite = (autoattack.SuiteAttack("apgd-ce", 20), autoattack.SuiteAttack("apgd-t", 20, 3))
    examples = autoattack.Examples.from_batches(batches)
    classify = autoattack.flax_classifier(parts.model)
    clean = pgd["flags"]["clean"]
    outcome = autoattack.run_suite(
        classify, state.variables, mesh, examples, clean, suite, eps, key, 200, 10
    )
    robust = outcome.robust
    assert 0.1 < pgd20 < 0.9  # a model that is neither broken nor untouched at this radius
    assert robust.mean() <= pgd20
