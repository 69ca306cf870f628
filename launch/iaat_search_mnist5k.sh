#!/usr/bin/env bash
# IAAT's hyper-parameters on the embedded default (MNIST-5k), chosen without the test digits:
# every run trains on the first 4,000 - VALIDATION training digits and is evaluated on the
# VALIDATION held out after them (--config.validation_examples). It trains IAAT for each
# warm-up radius of RADII and each gamma of GAMMAS, and PGD-AT at each radius of PGD_RADII as
# the fixed-radius reference; evaluates each with PGD-20 (CE and margin) at eps 0, 0.3 and
# 0.4; reports them; and prints the settings ranked by the rule stated before the search: the
# highest mean held-out clean accuracy + robust accuracy at 0.3 (the worst case over both
# losses), the best IAAT row being the one chosen.
# Usage: launch/iaat_search_mnist5k.sh OUT_DIR [RADII] [GAMMAS] [EPOCHS]
#   RADII "0.3 0.4 0.5", GAMMAS "0.075 0.15", EPOCHS 7 by default; PGD_RADII ("0.3 0.4"),
#   SEEDS ("0"), VALIDATION (1000) and IAAT_ARGS (further overrides of every IAAT run)
#   The defaults train 8 runs of 1-3 minutes each on 2 CPU cores and evaluate each in under a
#   minute: about 25 minutes in all. Rerunning resumes: finished runs are skipped.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 4 ]; then
  echo "usage: $0 OUT_DIR [RADII, e.g. \"0.3 0.4\"] [GAMMAS, e.g. \"0.075 0.15\"] [EPOCHS, e.g. 7]" >&2
  exit 2
fi
# shellcheck source=launch/_train_and_evaluate.sh
source "$(dirname "$0")/_train_and_evaluate.sh"
out=$1
read -r -a radii <<< "${2:-0.3 0.4 0.5}"
read -r -a gammas <<< "${3:-0.075 0.15}"
epochs=${4:-7}
read -r -a pgd_radii <<< "${PGD_RADII-0.3 0.4}"
read -r -a seeds <<< "${SEEDS:-0}"
validation=${VALIDATION:-1000}
require_whole_numbers seed "${seeds[@]}"
[[ $validation =~ ^[1-9][0-9]*$ ]] \
  || { echo "error: VALIDATION '$validation' is not a whole number >= 1 (0 would read the test digits)" >&2; exit 2; }
require_radii radius "${radii[@]}" "${pgd_radii[@]}"
require_radii gamma "${gammas[@]}"
require_epochs "$epochs"
cd "$(dirname "$0")/.."
common="--config.validation_examples=$validation --config.num_epochs=$epochs"
evaluation=(--config.sweep_epsilons="(0.0,0.3,0.4)" --config.sweep_attack_steps=20 --config.eval_suite=)
settings=()
for radius in "${pgd_radii[@]}"; do
  settings+=("pgd_eps$radius:--config.method=pgd --config.epsilon=$radius $common")
done
for radius in "${radii[@]}"; do
  for gamma in "${gammas[@]}"; do
    iaat="--config.method=iaat --config.epsilon=$radius --config.iaat_gamma=$gamma"
    settings+=("iaat_eps${radius}_gamma$gamma:$iaat $common ${IAAT_ARGS:-}")
  done
done
train_and_evaluate_settings
ranking=$(awk '/^## Ranked/{section=1} /^## / && !/^## Ranked/{section=0} section' "$out/report/report.md")
echo "$ranking"
echo "chosen (the best IAAT row):"
grep -m1 '| iaat |' <<< "$ranking" || echo "none: no IAAT setting has held-out numbers"
