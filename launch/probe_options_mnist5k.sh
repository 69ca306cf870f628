#!/usr/bin/env bash
# Cheaper IAAT probes on the embedded default (MNIST-5k, eps 0.3), in one command: IAAT with
# the full rule (probes of attack_steps PGD steps) and with probes of fewer steps
# (config.probe_steps), each for every seed; then PGD-20 (CE and margin) and an attack suite at
# eps 0.3, and the report: accuracy mean and spread over seeds, and each option's radius table
# against the full rule's of the same seed (mean |difference|, rank correlation).
# Usage: launch/probe_options_mnist5k.sh OUT_DIR [SEEDS] [PROBE_STEPS]
#   SEEDS: e.g. "0 1 2" (the default); PROBE_STEPS: e.g. "2 1" (the default)
#   SUITE: apgd (the default: APGD-CE + APGD-T, about 2 minutes per run on 2 CPU cores) or
#   autoattack (about 6 minutes); each training run takes 1-2 minutes.
# Rerunning resumes: finished trainings and evaluations are skipped.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 OUT_DIR [SEEDS, e.g. \"0 1 2\"] [PROBE_STEPS, e.g. \"2 1\"]" >&2; exit 2
fi
out=$1
read -r -a seeds <<< "${2:-0 1 2}"
read -r -a probes <<< "${3:-2 1}"
for number in "${seeds[@]}" "${probes[@]}"; do
  [[ $number =~ ^[0-9]+$ ]] || { echo "error: '$number' is not a whole number" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
evaluation=(--config.sweep_epsilons="(0.3,)" --config.sweep_attack_steps=20
            --config.eval_suite="${SUITE:-apgd}" --config.eval_suite_epsilons="(0.3,)")
settings=("full:")
for steps in "${probes[@]}"; do settings+=("probe$steps:--config.probe_steps=$steps"); done
mkdir -p "$out/logs"
start=$SECONDS
runs=()
for seed in "${seeds[@]}"; do
  for entry in "${settings[@]}"; do
    name=iaat_${entry%%:*}_seed$seed
    read -r -a overrides <<< "${entry#*:} --config.seed=$seed"
    runs+=("$out/$name")
    echo "[$((SECONDS - start))s] train $name"
    "$python" -m iaat_jax.main --config=configs/default.py --workdir="$out/$name" "${overrides[@]}" 2> "$out/logs/$name.train.log" \
      || { echo "training $name failed: see $out/logs/$name.train.log" >&2; exit 1; }
    if [ ! -f "$out/$name/eval.json" ]; then
      echo "[$((SECONDS - start))s] evaluate $name"
      "$python" -m iaat_jax.main --mode=evaluate --config=configs/default.py --workdir="$out/$name" \
        "${overrides[@]}" "${evaluation[@]}" 2> "$out/logs/$name.eval.log" \
        || { echo "evaluating $name failed: see $out/logs/$name.eval.log" >&2; exit 1; }
    fi
  done
done
echo "[$((SECONDS - start))s] report"
"$python" -m iaat_jax.report "${runs[@]}" --out "$out/report" --test_epsilon=0.3
echo "done in $((SECONDS - start))s: $out/report/report.md"
