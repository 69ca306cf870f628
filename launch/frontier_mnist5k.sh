#!/usr/bin/env bash
# The clean-vs-robust frontier on the embedded default (MNIST-5k, eps 0.3), in one command:
# clean training, PGD-AT at four fixed radii and IAAT, each for every seed; then a robustness
# sweep of each (PGD-20 with CE and margin losses) plus an attack suite at the radii of
# SUITE_EPSILONS, and the report, which gives the mean and spread over seeds.
# Usage: launch/frontier_mnist5k.sh OUT_DIR [SEEDS]      SEEDS: e.g. "0 1 2" (the default)
#   SUITE (autoattack_cpu; or autoattack, apgd: iaat_jax/autoattack.py) and SUITE_EPSILONS
#   ("(0.3,)") set the suite; each suite radius costs 2-7 minutes per run on 2 CPU cores
# Rerunning resumes: finished trainings and evaluations are skipped.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then echo "usage: $0 OUT_DIR [SEEDS, e.g. \"0 1 2\"]" >&2; exit 2; fi
out=$1
read -r -a seeds <<< "${2:-0 1 2}"
for seed in "${seeds[@]}"; do
  [[ $seed =~ ^[0-9]+$ ]] || { echo "error: seed '$seed' is not a whole number" >&2; exit 2; }
done
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
sweep=(--config.sweep_epsilons="(0.0,0.1,0.2,0.3,0.4)" --config.sweep_attack_steps=20
       --config.eval_suite="${SUITE:-autoattack_cpu}" --config.eval_suite_epsilons="${SUITE_EPSILONS:-(0.3,)}")
settings=(
  "clean:--config.method=clean"
  "pgd_eps0.1:--config.method=pgd --config.epsilon=0.1"
  "pgd_eps0.2:--config.method=pgd --config.epsilon=0.2"
  "pgd_eps0.3:--config.method=pgd --config.epsilon=0.3"
  "pgd_eps0.4:--config.method=pgd --config.epsilon=0.4"
  "iaat_eps0.3:--config.method=iaat --config.epsilon=0.3"
)
mkdir -p "$out/logs"
start=$SECONDS
runs=()
for seed in "${seeds[@]}"; do
  for entry in "${settings[@]}"; do
    name=${entry%%:*}_seed$seed
    read -r -a overrides <<< "${entry#*:} --config.seed=$seed"
    runs+=("$out/$name")
    echo "[$((SECONDS - start))s] train $name"
    "$python" -m iaat_jax.main --config=configs/default.py --workdir="$out/$name" "${overrides[@]}" 2> "$out/logs/$name.train.log" \
      || { echo "training $name failed: see $out/logs/$name.train.log" >&2; exit 1; }
    if [ ! -f "$out/$name/eval.json" ]; then
      echo "[$((SECONDS - start))s] evaluate $name"
      "$python" -m iaat_jax.main --mode=evaluate --config=configs/default.py --workdir="$out/$name" \
        "${overrides[@]}" "${sweep[@]}" 2> "$out/logs/$name.eval.log" \
        || { echo "evaluating $name failed: see $out/logs/$name.eval.log" >&2; exit 1; }
    fi
  done
done
echo "[$((SECONDS - start))s] report"
"$python" -m iaat_jax.report "${runs[@]}" --out "$out/report" --test_epsilon=0.3
echo "done in $((SECONDS - start))s: $out/report/report.md"
