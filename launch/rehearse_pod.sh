#!/usr/bin/env bash
# Rehearse the Cloud TPU pod launch on this machine: launch/tpu_pod.py, unchanged, against a
# stand-in gcloud (launch/rehearsal/gcloud) that simulates a slice of WORKERS TPU VM hosts here
# (one HOME each, their python3 a real Python 3.10). Create, install (the launcher's own uv
# commands; one package cache for all workers), detached training, a preemption mid-run,
# recreate and resume; then the launcher killed mid-run and re-attached; both compared with an
# unbroken run (exact). What it checks: launch/rehearsal/rehearse.py. Last line: one JSON object.
# Usage: launch/rehearse_pod.sh [WORKERS]      (default 2; about 10 minutes on 2 cores)
#   PYTHON: the interpreter with iaat_jax's requirements (default .venv/bin/python)
#   PYTHON310: a Python 3.10 for the workers' python3 (default: pyenv's, or python3.10)
#   IAAT_STANDIN_CACHE: the shared package cache (default ~/.cache/iaat_jax_rehearsal)
#   KEEP=1 keeps the rehearsal's directory (its path is printed) for a look afterwards
set -euo pipefail
workers=${1:-2}
if ! [[ $workers =~ ^[1-9][0-9]?$ ]]; then
  echo "error: WORKERS '$workers' is not a whole number from 1 to 99" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
find_python() {  # VERSION: an interpreter of that minor version, not a venv's
  local candidate
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python"$1" \
      "$(command -v "python$1" || true)"; do
    if [ -x "$candidate" ] && "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$1'.split('.'))))" 2>/dev/null; then
      "$candidate" -c "import sys; print(sys.executable)"
      return 0
    fi
  done
  return 1
}
python310=${PYTHON310:-$(find_python 3.10)} || {
  echo "error: no Python 3.10 here for the workers' python3: set PYTHON310=/path/to/python3.10" >&2
  exit 2
}
python311=$(find_python 3.11) || {
  echo "error: no Python 3.11 here to offer to the workers' uv: install one (pyenv install 3.11)" >&2
  exit 2
}
root=$(mktemp -d "${TMPDIR:-/tmp}/iaat_rehearsal.XXXXXX")
mkdir -p "$root/cloud"
export IAAT_STANDIN_ROOT=$root/cloud IAAT_STANDIN_PYTHON310=$python310 \
  IAAT_STANDIN_PYTHON311=$python311 \
  IAAT_STANDIN_CACHE=${IAAT_STANDIN_CACHE:-$HOME/.cache/iaat_jax_rehearsal}
cleanup() {  # every process of the rehearsal: the launchers, the workers, the unbroken run
  local proc
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" = "$$" ] && continue
    if { tr '\0' '\n' < "$proc/environ"; } 2>/dev/null | grep -qxF "IAAT_STANDIN_ROOT=$root/cloud"; then
      kill -9 "${proc#/proc/}" 2>/dev/null || true
    fi
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept: $root" >&2; else rm -rf "$root"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
"$python" launch/rehearsal/rehearse.py "$workers"
