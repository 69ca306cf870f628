"""Fake-data smoke runs of the paper configs through the CLI, and the TensorFlow-free path."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, load_config

from iaat_jax import fake_data

# Run Python with TensorFlow, TFDS and TensorBoard hidden, as on a machine without them.
WITHOUT_TENSORFLOW = """
import sys
HIDDEN = ("tensorflow", "tensorflow_datasets", "tensorboard")
class Hide:
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)
sys.meta_path[:] = [Hide(finder) for finder in sys.meta_path]
import runpy
sys.argv = ["iaat_jax.main"] + sys.argv[1:]
runpy.run_module("iaat_jax.main", run_name="__main__")
"""


def run_main(*args, hide_tensorflow=False):
    """python -m iaat_jax.main ARGS with one CPU device (optionally without TensorFlow)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    launcher = ["-c", WITHOUT_TENSORFLOW] if hide_tensorflow else ["-m", "iaat_jax.main"]
    return subprocess.run(
        [sys.executable, *launcher, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_fake_data_has_the_true_shapes_classes_and_ids():
    config = load_config("imagenet")
    config.batch_size = 4
    source = fake_data.create_fake_source(config, process_index=1, process_count=2)
    batch = next(source.train_epoch(0))
    assert batch["image"].shape == (2, 224, 224, 3) and batch["image"].dtype == np.float32
    assert np.all(batch["label"] < 1000) and source.num_train == 1_281_167
    assert np.all((batch["id"] >= 1_281_167 // 2) & (batch["id"] < 1_281_167))


@pytest.mark.parametrize("name, num_train", [("cifar10", 50_000), ("imagenet", 1_281_167)])
def test_paper_config_smoke_runs_on_fake_data(name, num_train, tmp_path):
    # the README's smoke command; PGD-1 attacks keep the test suite short
    result = run_main(
        f"--config=configs/{name}.py",
        f"--workdir={tmp_path}",
        "--config.fake_data=True",
        "--config.num_train_steps=2",
        "--config.batch_size=8",
        "--config.attack_steps=1",
        "--config.eval_attack_steps=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = np.load(tmp_path / "epsilon_table.npy")
    assert table.shape == (num_train,)
    assert np.count_nonzero(table) <= 16  # only the 16 ids of the two steps were visited
    assert (tmp_path / "checkpoints" / "2").is_dir()


def test_fake_data_runs_without_tensorflow(tmp_path):
    result = run_main(
        "--config=configs/default.py",
        f"--workdir={tmp_path}",
        "--config.fake_data=True",
        "--config.num_train_steps=3",
        hide_tensorflow=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No TensorBoard summaries" in result.stderr  # it really ran without them
    assert (tmp_path / "epsilon_table.npy").exists() and (tmp_path / "metrics.jsonl").exists()
