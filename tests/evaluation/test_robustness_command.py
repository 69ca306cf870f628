"""`python -m iaat_jax.robustness`: exported models and runs evaluated without their training
code, bad input in one line, and the same numbers as the API in-process."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, cli_env

from iaat_jax import robustness
from iaat_jax.evaluation import robustness_command


def run_command(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "iaat_jax.robustness", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_artifact_serialized_without_its_vjp_is_refused_in_one_line(tmp_path):
    exported = jax.export.export(jax.jit(lambda x: x.reshape(x.shape[0], -1)))(
        jax.ShapeDtypeStruct((4, 2, 2, 1), jnp.float32)
    )
    (tmp_path / "old.jax_exported").write_bytes(exported.serialize())
    np.savez(tmp_path / "data.npz", images=np.zeros((4, 2, 2, 1), np.float32), labels=np.zeros(4))
    result = run_command(
        f"--exported={tmp_path / 'old.jax_exported'}",
        f"--npz={tmp_path / 'data.npz'}",
        "--epsilon=0.1",
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "without its VJP" in last and "--mode=export" in last


def test_the_commands_bad_input_is_one_line_and_exit_2(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 2, 2, 1)))
    np.savez(tmp_path / "data.npz", images=np.zeros((4, 2, 2, 1), np.float32), labels=np.zeros(4))
    (tmp_path / "garbage.jax_exported").write_bytes(b"not an artifact")
    for args, message in (
        (["--exported=x", "--dataset=mnist50k"], "unknown dataset 'mnist50k'"),
        (["--exported=x", f"--npz={tmp_path / 'images.npy'}"], "is not an .npz"),
        (
            [f"--exported={tmp_path / 'garbage.jax_exported'}", f"--npz={tmp_path / 'data.npz'}"],
            "is not a jax.export artifact",
        ),
    ):
        result = run_command(*args, "--epsilon=0.1")
        assert result.returncode == 2, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in result.stderr


@pytest.mark.slow  # the command in a process of its own, then the API here: about a minute
def test_the_command_on_an_exported_default_model_equals_the_api_in_process(tmp_path):
    from iaat_jax import models, trained
    from iaat_jax.configs import default

    config = default.get_config()
    model = models.create_model(config.model, 10)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    classifier = trained.Classifier(config, model, variables, 0, np.zeros(4000), (28, 28, 1))
    path = trained.export(classifier, str(tmp_path / "export"))
    rng = np.random.default_rng(0)
    images = (rng.random((48, 28, 28, 1)) * 255).astype(np.uint8)
    labels = classifier.predict(images.astype(np.float32) / 255).argmax(-1)
    np.savez(tmp_path / "digits.npz", images=images, labels=labels)
    out = tmp_path / "eval.json"
    args = [f"--exported={path}", f"--npz={tmp_path / 'digits.npz'}", "--epsilon=0.02"]
    result = run_command(*args, "--suite=smoke", "--batch_size=16", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(out.read_text())
    in_process = robustness.autoattack(
        robustness_command.load_exported(path),
        images.astype(np.float32) / 255,
        labels,
        0.02,
        suite="smoke",
        batch_size=16,
        key=jax.random.split(jax.random.key(0))[1],
    )
    assert 0 < in_process.robust_accuracy < 1  # some examples broken, some not
    expected = robustness_command.eval_json(in_process, None, None, path)
    for name in ("num_examples", "clean_accuracy", "worst_case", "robustbench"):
        assert written[name] == expected[name], name
    assert [a["robust_accuracy"] for a in written["autoattack"][0]["attacks"]] == [
        a["robust_accuracy"] for a in expected["autoattack"][0]["attacks"]
    ]
    assert f"robust accuracy {in_process.robust_accuracy:.4f}" in result.stdout
