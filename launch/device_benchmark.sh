#!/usr/bin/env bash
# The accelerator check, one command: on one GPU (or TPU host) the train-step benchmark's JSON
# for clean, PGD-AT and IAAT on WRN-32-10 (CIFAR shapes) and ResNet-50 (ImageNet shapes) in
# bf16 (images/s, MFU, compile seconds, collectives), then the IAAT step's FLOPs and
# collectives under each attack BatchNorm policy (lowered only). Budget: under 8 minutes on one
# H100/H200; each benchmark call is cut at LIMIT seconds (default 150) so one slow compile
# cannot eat the rest.
# Usage: launch/device_benchmark.sh [OUT.jsonl]     (default: device_benchmark.jsonl)
#   EXTRA: arguments added to every benchmark call (e.g. a smaller batch; tests use it on CPU)
set -euo pipefail
if [ $# -gt 1 ]; then echo "usage: $0 [OUT.jsonl]" >&2; exit 2; fi
out=${1:-device_benchmark.jsonl}
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
read -r -a extra <<< "${EXTRA:-}"
: > "$out"
start=$SECONDS
bench() {
  echo "[$((SECONDS - start))s] benchmark $*" >&2
  timeout "${LIMIT:-150}" "$python" -m iaat_jax.benchmark "$@" "${extra[@]}" | tee -a "$out" \
    || echo "benchmark $* failed or ran past ${LIMIT:-150} s" >&2
}
bench --config=configs/cifar10.py --config.half_precision=True --steps=10 --warmup_steps=2
bench --config=configs/imagenet.py --config.half_precision=True --config.batch_size=256 \
  --steps=5 --warmup_steps=1
for policy in running global local; do
  updates=True; [ "$policy" = running ] && updates=False
  bench --config=configs/cifar10.py --config.half_precision=True --methods=iaat --flops_only \
    --config.attack_batchnorm=$policy --config.attack_batchnorm_updates=$updates
done
echo "done in $((SECONDS - start)) s: $(wc -l < "$out") records in $out" >&2
