#!/usr/bin/env bash
# Train on all GPUs of one machine (data-parallel over every visible device).
# Usage: launch/gpu.sh CONFIG WORKDIR [--config.NAME=VALUE ...]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
[ -d .venv ] || { python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[cuda13]==0.10.2'; }
exec .venv/bin/python -m iaat_jax.main --config="$1" --workdir="$2" "${@:3}"
