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
evaluation=(--config.sweep_epsilons="(0.3,)" --config.sweep_attack_steps=20
            --config.eval_suite="${SUITE:-apgd}" --config.eval_suite_epsilons="(0.3,)")
settings=("iaat_full:")
for steps in "${probes[@]}"; do settings+=("iaat_probe$steps:--config.probe_steps=$steps"); done
# shellcheck source=launch/_train_and_evaluate.sh
source launch/_train_and_evaluate.sh
train_and_evaluate_settings
