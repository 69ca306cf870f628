"""A trained run as a product: load(workdir), and the exports that run without iaat_jax."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, cli_env

from iaat_jax import trained
from iaat_jax.data import input_pipeline
from iaat_jax.errors import ConfigError
from iaat_jax.run.workdir import saved_config
from iaat_jax.trained import load


def eval_digits(workdir):
    """The embedded test split's images and labels, as evaluation reads them."""
    source = input_pipeline.create_data_source(saved_config(workdir))
    batches = list(source.eval_batches())
    keep = np.concatenate([b["mask"] for b in batches]) > 0
    images = np.concatenate([b["image"] for b in batches])[keep] / np.float32(255)
    return images, np.concatenate([b["label"] for b in batches])[keep]


def test_a_loaded_run_predicts_what_its_evaluation_measured(trained_runs):
    workdir, results = trained_runs["iaat"]
    classifier = load(str(workdir))
    images, labels = eval_digits(workdir)
    logits = classifier.predict(images)
    assert logits.shape == (1000, 10) and logits.dtype == np.float32
    assert np.mean(logits.argmax(-1) == labels) == results["clean_accuracy"]
    # any batch size, the same logits
    np.testing.assert_allclose(classifier.predict(images[:7]), logits[:7], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(classifier.epsilon_table, np.load(workdir / "epsilon_table.npy"))
    assert classifier.ids.tolist() == list(range(4000)) and classifier.step == 50
    assert classifier.config.method == "iaat"
    with pytest.raises(ValueError, match=r"do not fit this model: pass \[batch, 28, 28, 1\]"):
        classifier.predict(images[:2, :14])
    # the README's helper reads the same digits; uint8 is divided by 255; 0-255 floats refused
    split_images, split_labels = trained.load_test_split("mnist5k", classifier.config.data_dir)
    np.testing.assert_array_equal(split_images, images)
    np.testing.assert_array_equal(split_labels, labels)
    digits = np.round(images[:16] * 255).astype(np.uint8)
    np.testing.assert_array_equal(classifier.predict(digits), classifier.predict(images[:16]))
    with pytest.raises(ValueError, match=r"values in \[0, 255\]; the model takes \[0, 1\]"):
        classifier.predict(digits.astype(np.float32))


def test_loading_a_workdir_without_a_run_or_a_step_is_one_clear_error(trained_runs, tmp_path):
    with pytest.raises(ConfigError, match="holds no training run .*: pass the directory a run"):
        load(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="no checkpoint at step 3 .* steps 50"):
        load(str(trained_runs["iaat"][0]), step=3)


# Runs where iaat_jax cannot be imported: in the export directory, python -I (no cwd on the path)
STANDALONE = """
import importlib.util, sys
import jax
import numpy as np
from jax import export
assert importlib.util.find_spec("iaat_jax") is None, "iaat_jax is importable here"
images = np.load("images.npy")
predict = export.deserialize(open("predict.jax_exported", "rb").read())
np.save("jax_logits.npy", np.asarray(predict.call(images)))
import tensorflow as tf
serving = tf.saved_model.load("saved_model").signatures["serving_default"]
np.save("tf_logits.npy", list(serving(images=tf.constant(images)).values())[0].numpy())
"""


@pytest.mark.slow  # the CLI, then TensorFlow and JAX in a fresh process: about a minute
def test_an_export_runs_without_iaat_jax_and_equals_predict(trained_runs, tmp_path):
    workdir, _ = trained_runs["pgd"]
    out = tmp_path / "export"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "iaat_jax.main",
            "--mode=export",
            f"--workdir={workdir}",
            f"--out={out}",
        ],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    described = json.loads((out / "export.json").read_text())
    assert described["method"] == "pgd" and described["step"] == 50
    assert set(described["platforms"]) == set(trained.EXPORT_PLATFORMS)
    images, _ = eval_digits(workdir)
    images = images[:13]  # a batch size the export never saw
    np.save(out / "images.npy", images)
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = load(str(workdir)).predict(images)
    np.testing.assert_allclose(np.load(out / "jax_logits.npy"), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(out / "tf_logits.npy"), expected, rtol=1e-4, atol=1e-4)
