#!/usr/bin/env bash
# The clean-vs-robust frontier on the embedded default (MNIST-5k, eps 0.3), in one command:
# clean training, PGD-AT at four fixed radii, IAAT; then a robustness sweep of each and the report.
# Usage: launch/frontier_mnist5k.sh OUT_DIR      (about 16 minutes on 2 CPU cores)
# Rerunning resumes: finished trainings and evaluations are skipped.
set -euo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 OUT_DIR" >&2; exit 2; fi
out=$1
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
sweep=(--config.sweep_epsilons="(0.0,0.1,0.2,0.3,0.4,0.5,0.6)" --config.sweep_attack_steps=20)
runs=(
  "clean:--config.method=clean"
  "pgd_eps0.1:--config.method=pgd --config.epsilon=0.1"
  "pgd_eps0.2:--config.method=pgd --config.epsilon=0.2"
  "pgd_eps0.3:--config.method=pgd --config.epsilon=0.3"
  "pgd_eps0.4:--config.method=pgd --config.epsilon=0.4"
  "iaat_eps0.3:--config.method=iaat --config.epsilon=0.3"
)
mkdir -p "$out/logs"
start=$SECONDS
for entry in "${runs[@]}"; do
  name=${entry%%:*}
  read -r -a overrides <<< "${entry#*:}"
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
echo "[$((SECONDS - start))s] report"
"$python" -m iaat_jax.report "$out"/clean "$out"/pgd_eps* "$out"/iaat_eps* --out "$out/report" --test_epsilon=0.3
echo "done in $((SECONDS - start))s: $out/report/report.md"
