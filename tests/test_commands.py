"""The commands keep their names where their code moved into a folder: `python -m
iaat_jax.report` and `python -m iaat_jax.prepare` run the moved modules' main."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize(
    "command, usage",
    [
        ("report", "usage: python -m iaat_jax.report"),
        ("prepare", "usage: python -m iaat_jax.prepare"),
    ],
)
def test_the_command_runs_the_moved_module(command, usage):
    result = subprocess.run(
        [sys.executable, "-m", f"iaat_jax.{command}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(usage)
