#!/usr/bin/env bash
# Train on all GPUs of one machine (data-parallel over every visible device).
# Usage: launch/gpu.sh [--allow_cpu] CONFIG WORKDIR [--config.NAME=VALUE ...]
#        launch/gpu.sh --setup      install only (on a SLURM cluster: once, on a login node)
# It makes .venv where there is none (Python >= 3.11) and installs requirements.txt and the
# CUDA plugin at the pinned jax version into it, also into a .venv that exists without the
# plugin (the README's CPU quick start makes one). Training stops with one line when JAX sees
# no GPU; --allow_cpu lets it train on the CPU instead. Paths are read from where you call it.
#   CUDA=12 or 13: the plugin's CUDA major (default 13: jax[cuda13]; 12 for older drivers)
#   PYTHON: the interpreter that makes .venv (default python3)   VENV: default REPO/.venv
set -euo pipefail
usage="usage: $0 [--allow_cpu] CONFIG WORKDIR [--config.NAME=VALUE ...]  or  $0 --setup"
allow_cpu=0 setup=0
while [ $# -gt 0 ]; do
  case $1 in
    --setup) setup=1 ;;
    --allow_cpu) allow_cpu=1 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    --) shift; break ;;
    --*) echo "error: unknown option $1: $usage" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [ $setup = 0 ] && [ $# -lt 2 ]; then echo "$usage" >&2; exit 2; fi
cuda=${CUDA:-13}
if [ "$cuda" != 12 ] && [ "$cuda" != 13 ]; then
  echo "error: CUDA=$cuda: the jax CUDA plugins are for CUDA 12 or 13" >&2
  exit 2
fi
absolute() {  # a local path as seen from the caller's directory; gs:// and /... as they are
  case $1 in /* | *://*) echo "$1" ;; *) echo "$PWD/$1" ;; esac
}
args=()
if [ $# -ge 2 ]; then
  args=("--config=$(absolute "$1")" "--workdir=$(absolute "$2")")
  for arg in "${@:3}"; do
    case $arg in
      --config.data_dir=*) args+=("--config.data_dir=$(absolute "${arg#--config.data_dir=}")") ;;
      *) args+=("$arg") ;;
    esac
  done
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$(absolute "${VENV:-$repo/.venv}")
jax_version=$(sed -n 's/^jax==\([0-9.]*\).*/\1/p' "$repo/requirements.txt")
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "error: ${PYTHON:-python3} is Python $("${PYTHON:-python3}" -c 'import platform; print(platform.python_version())'); the pins need >= 3.11: set PYTHON=/path/to/python3.11" >&2
    exit 2
  }
  "${PYTHON:-python3}" -m venv "$venv"
fi
plugin="jax-cuda$cuda-plugin" other="jax-cuda$((25 - cuda))-plugin"
versions=$("$venv/bin/python" -c "from importlib import metadata
for name in ('$plugin', '$other'):
    try: print(metadata.version(name))
    except metadata.PackageNotFoundError: print('-')")
if [ "$(echo "$versions" | sed -n 2p)" != - ]; then  # two CUDA plugins would both register
  echo "gpu.sh: removing $other from $venv (CUDA=$cuda)" >&2
  "$venv/bin/python" -m pip uninstall -q -y "$other" "jax-cuda$((25 - cuda))-pjrt"
fi
if [ "$(echo "$versions" | sed -n 1p)" != "$jax_version" ]; then
  echo "gpu.sh: installing requirements.txt and jax[cuda$cuda]==$jax_version into $venv" >&2
  "$venv/bin/python" -m pip install -q -r "$repo/requirements.txt" "jax[cuda$cuda]==$jax_version"
fi
if [ $setup = 1 ]; then
  echo "gpu.sh: $venv is ready ($plugin $jax_version)" >&2
  exit 0
fi
cd "$repo"
require=(--require_platform=gpu)
[ $allow_cpu = 1 ] && require=()
exec "$venv/bin/python" -m iaat_jax.main ${require[@]+"${require[@]}"} "${args[@]}"
