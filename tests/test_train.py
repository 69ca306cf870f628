"""The training loop: artefacts, learning, automatic resume equal to an unbroken run."""

import json

import numpy as np
import pytest

from iaat_jax import train


def read_metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_a_stopped_and_rerun_training_equals_an_unbroken_one(fast_config, tmp_path):
    unbroken, broken = tmp_path / "unbroken", tmp_path / "broken"
    train.train_and_evaluate(fast_config, str(unbroken))

    fast_config.num_train_steps = 50  # one epoch of 4000 / 80: the run stops after epoch 1
    first_part = train.train_and_evaluate(fast_config, str(broken))
    assert int(first_part.step) == 50
    table_after_one_epoch = np.load(broken / "epsilon_table.npy")
    fast_config.num_train_steps = -1  # rerun the same command without the stop: it resumes
    train.train_and_evaluate(fast_config, str(broken))

    expected, resumed = (
        np.load(unbroken / "epsilon_table.npy"),
        np.load(broken / "epsilon_table.npy"),
    )
    assert expected.shape == (4000,) and expected.dtype == np.float32
    assert not np.array_equal(table_after_one_epoch, resumed)  # epoch 2 did run after resuming
    np.testing.assert_array_equal(resumed, expected)
    evals = [[r for r in read_metrics(d) if "robust_accuracy" in r] for d in (unbroken, broken)]
    assert [r["step"] for r in evals[1]] == [50, 100]  # no duplicate records after the resume
    assert evals[0][-1]["robust_accuracy"] == evals[1][-1]["robust_accuracy"]


def test_training_writes_metrics_and_table_and_learns(fast_config, tmp_path):
    fast_config.num_epochs, fast_config.warmup_epochs = 2, 1
    train.train_and_evaluate(fast_config, str(tmp_path))
    records = read_metrics(tmp_path)
    evals = [r for r in records if "robust_accuracy" in r]
    assert [r["epoch"] for r in evals] == [0, 1]
    for record in evals:
        assert 0.0 <= record["robust_accuracy"] <= record["clean_accuracy"] <= 1.0
        assert {"epsilon_mean", "epsilon_p10", "epsilon_p50", "epsilon_p90"} <= record.keys()
    assert evals[-1]["clean_accuracy"] > 0.5  # far above the 0.1 of chance after 2 epochs
    steps = [r for r in records if "train_loss" in r]
    assert steps and all(r["images_per_second"] > 0 for r in steps)
    table = np.load(tmp_path / "epsilon_table.npy")
    assert table.shape == (4000,) and np.all(table >= 0) and table.std() > 0
    assert evals[-1]["epsilon_mean"] == pytest.approx(float(table.mean()), rel=1e-5)
