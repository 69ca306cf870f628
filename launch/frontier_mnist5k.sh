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
evaluation=(--config.sweep_epsilons="(0.0,0.1,0.2,0.3,0.4)" --config.sweep_attack_steps=20
            --config.eval_suite="${SUITE:-autoattack_cpu}" --config.eval_suite_epsilons="${SUITE_EPSILONS:-(0.3,)}")
settings=(
  "clean:--config.method=clean"
  "pgd_eps0.1:--config.method=pgd --config.epsilon=0.1"
  "pgd_eps0.2:--config.method=pgd --config.epsilon=0.2"
  "pgd_eps0.3:--config.method=pgd --config.epsilon=0.3"
  "pgd_eps0.4:--config.method=pgd --config.epsilon=0.4"
  "iaat_eps0.3:--config.method=iaat --config.epsilon=0.3"
)
# shellcheck source=launch/_train_and_evaluate.sh
source launch/_train_and_evaluate.sh
train_and_evaluate_settings
