"""Fake-data smoke runs of the paper configs through the CLI, and the TensorFlow-free path."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, cli_env, load_config

from iaat_jax.data import fake_data

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
    env = cli_env()
    launcher = ["-c", WITHOUT_TENSORFLOW] if hide_tensorflow else ["-m", "iaat_jax.main"]
    return subprocess.run(
        [sys.executable, *launcher, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def visited_ids(name: str, batch_size: int, steps: int) -> list[np.ndarray]:
    """The ids of the first `steps` fake-data batches of configs/<name>.py, in order."""
    config = load_config(name)
    config.batch_size = batch_size
    batches = fake_data.create_fake_source(config).train_epoch(0)
    return [next(batches)["id"] for _ in range(steps)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, num_train, method", [("cifar10", 50_000, "iaat"), ("imagenet", 1_281_167, "pgd")]
)
def test_paper_config_smoke_runs_on_fake_data(name, num_train, method, tmp_path):
    # the README's smoke command; PGD-1 attacks keep the test suite short
    result = run_main(
        f"--config=configs/{name}.py",
        f"--workdir={tmp_path}",
        "--config.fake_data=True",
        "--config.num_train_steps=2",
        "--config.batch_size=8",
        "--config.attack_steps=1",
        "--config.eval_attack_steps=1",
        "--config.log_every_steps=1",
        f"--config.method={method}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "2").is_dir()
    table = np.load(tmp_path / "epsilon_table.npy")
    assert table.shape == (num_train,)
    steps = visited_ids(name, batch_size=8, steps=2)
    untouched = np.ones(num_train, bool)
    untouched[np.concatenate(steps)] = False
    assert not table[untouched].any()  # only the 16 ids of the two steps were written
    epsilon = load_config(name).epsilon
    if method == "pgd":  # PGD-AT writes its fixed radius for every visited id
        np.testing.assert_allclose(table[~untouched], epsilon)
        return
    # IAAT warm-up: epsilon where the step's clean check was right, else 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    clean = {r["step"]: r["train_clean_accuracy"] for r in records if "train_loss" in r}
    for step, ids in enumerate(steps, start=1):
        assert np.all(np.isclose(table[ids], 0) | np.isclose(table[ids], epsilon))
        assert np.mean(table[ids] > 0) == pytest.approx(clean[step])
    assert table.max() > 0  # this seed's run has correct examples, so the check can fail


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
