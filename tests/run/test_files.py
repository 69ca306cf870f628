"""The file layer on a local disk and on a non-local filesystem (TensorFlow's in-memory ram://,
which goes through tf.io.gfile exactly as gs:// does)."""

import uuid

import numpy as np
import pytest

from iaat_jax.method.epsilon import EpsilonTable
from iaat_jax.run import files
from iaat_jax.run.metrics_log import MetricsLog


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    path = f"ram://iaat-{uuid.uuid4().hex}/run"
    files.makedirs(path)
    return path


def test_text_and_arrays_round_trip_and_replace_atomically(root):
    path = files.join(root, "config.json")
    assert not files.exists(path)
    files.write_text(path, "first")
    files.write_text(path, "second")
    assert files.read_text(path) == "second"
    table = files.join(root, "epsilon_table.npy")
    EpsilonTable(5, np.arange(5, dtype=np.float32)).save_npy(table)
    np.testing.assert_array_equal(files.load_npy(table), np.arange(5))
    files.remove(path)
    assert not files.exists(path)


def test_metrics_log_commits_to_the_same_filesystem(root):
    log = MetricsLog(root, is_primary=True)
    log.write(10, {"train_loss": 1.0})
    log.commit(up_to=10)
    log.close()
    resumed = MetricsLog(root, is_primary=True)
    resumed.drop_after(10)
    resumed.write(20, {"train_loss": 0.5})
    resumed.commit(up_to=20)
    lines = files.read_text(files.join(root, "metrics.jsonl")).splitlines()
    assert lines == ['{"step": 10, "train_loss": 1.0}', '{"step": 20, "train_loss": 0.5}']


def test_a_damaged_npy_is_an_error_that_names_the_file(root):
    path = files.join(root, "epsilon_table.npy")
    files.write_bytes(path, b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="epsilon_table.npy is not a readable .npy array"):
        files.load_npy(path)


def test_no_temporary_file_is_left_behind(tmp_path):
    files.write_text(str(tmp_path / "a.txt"), "x")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
