"""Fake-data smoke runs of the paper configs, and the runs' TensorFlow-free path."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, load_config

from iaat_jax import fake_data, train


def test_fake_data_has_the_true_shapes_classes_and_ids():
    config = load_config("imagenet")
    config.batch_size = 4
    source = fake_data.create_fake_source(config, process_index=1, process_count=2)
    batch = next(source.train_epoch(0))
    assert batch["image"].shape == (2, 224, 224, 3) and batch["image"].dtype == np.float32
    assert np.all(batch["label"] < 1000) and source.num_train == 1_281_167
    assert np.all((batch["id"] >= 1_281_167 // 2) & (batch["id"] < 1_281_167))


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_paper_config_smoke_runs_on_fake_data(name, tmp_path):
    config = load_config(name)
    config.update(
        dict(fake_data=True, num_train_steps=2, batch_size=8, attack_steps=1, eval_attack_steps=1)
    )
    if name == "cifar10":
        config.update(
            dict(model="wrn34_10")
        )  # the standard WRN; the authors' variant shares the step
    state = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2
    table = np.load(tmp_path / "epsilon_table.npy")
    assert table.shape == ({"cifar10": 50_000, "imagenet": 1_281_167}[name],)
    assert np.count_nonzero(table) <= 16  # only the 16 ids the two steps visited


def test_fake_data_runs_without_tensorflow(tmp_path):
    """A run on fake data never imports TensorFlow (the lent GPU machines have none)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'tensorboard'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from absl import app\n"
        "from iaat_jax import main\n"
        "sys.argv = ['main', '--config=configs/default.py', '--workdir=" + str(tmp_path) + "',\n"
        "            '--config.fake_data=True', '--config.num_train_steps=3']\n"
        "app.run(main.main)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "epsilon_table.npy").exists() and (tmp_path / "metrics.jsonl").exists()
