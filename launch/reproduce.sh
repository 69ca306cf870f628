#!/usr/bin/env bash
# The paper's CIFAR-10 comparison in one command (launch/reproduce.py says what it runs):
#   launch/reproduce.sh cifar10 OUT --plan [--accelerator=h100|v4-8|...]   its cost, runs nothing
#   launch/reproduce.sh cifar10 OUT [--command='launch/gpu.sh {config} {workdir} {args}']
# PYTHON: the interpreter (default: the checkout's .venv, else python3).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
[ -x "$python" ] || python=python3
exec "$python" "$repo/launch/reproduce.py" "$@"
