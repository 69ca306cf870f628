#!/usr/bin/env bash
# Train on every worker of a Cloud TPU VM pod slice. JAX finds the other hosts by itself
# (--multihost calls jax.distributed.initialize()); each host reads its own slice of the data.
# Usage: launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.NAME=VALUE ...]
#   WORKDIR and the TFDS data_dir should be gs:// paths that every host can reach.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [overrides...]" >&2
  exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4
shift 4
cd "$(dirname "$0")/.."
# copy this checkout (without its venv and runs) to every worker
tar --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/iaat_jax.tgz .
gcloud compute tpus tpu-vm scp /tmp/iaat_jax.tgz "$tpu":iaat_jax.tgz --zone="$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  set -e
  mkdir -p iaat_jax && tar -xzf iaat_jax.tgz -C iaat_jax && cd iaat_jax
  python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'
  .venv/bin/python -m iaat_jax.main --multihost --config=$config --workdir=$workdir $*
"
