"""The errors module: importable alone, so loading a trained model or a checkpoint does not pull
in the attacks (FAB, Square) through the config checks."""

import ast
import subprocess
import sys

from conftest import REPO

from iaat_jax import errors


def test_errors_imports_nothing():
    tree = ast.parse((REPO / "iaat_jax" / "errors.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_loading_a_model_or_a_checkpoint_imports_no_attack():
    code = (
        "import sys, iaat_jax.trained, iaat_jax.run.checkpoint, iaat_jax.run.workdir; "
        "print(sorted(m for m in sys.modules if m.startswith('iaat_jax.attacks')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_stopped_run_says_how_to_resume():
    message = str(errors.TrainingStopped(40, "SIGTERM", "/tmp/run"))
    assert "step 40" in message and "/tmp/run" in message and "rerun" in message
