#!/usr/bin/env bash
# The clean-vs-robust frontier on the embedded default (MNIST-5k), in one command: clean
# training, PGD-AT at each fixed radius of RADII, TRADES and IAAT, each for every seed and the
# training length EPOCHS; then a robustness sweep of each (PGD-20 with CE and margin losses)
# plus an attack suite at the radii of SUITE_EPSILONS, and the report (mean and spread over
# seeds, the Pareto figure).
# Usage: launch/frontier_mnist5k.sh OUT_DIR [SEEDS] [RADII] [EPOCHS]
#   default SEEDS "0 1 2", RADII "0.1 0.2 0.3 0.4" (PGD-AT's; "" for none), EPOCHS 7 (the default config's)
#   TRADES_RADII ("0.3"; "" for none) and IAAT_RADII ("0.3": IAAT's warm-up radius; "" for none);
#   IAAT_ARGS: further overrides of every IAAT run, e.g. "--config.iaat_gamma=0.05"; CLEAN=0: no
#   clean-training run (e.g. a further IAAT setting beside a finished frontier)
#   SUITE (autoattack_cpu; or autoattack, apgd: iaat_jax/attacks/autoattack.py) and SUITE_EPSILONS
#   ("(0.3,)") set the suite; each suite radius costs 2-7 minutes per run on 2 CPU cores, and a
#   7-epoch training run 1-3 minutes
# Rerunning resumes: finished trainings and evaluations are skipped.
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 4 ]; then
  echo "usage: $0 OUT_DIR [SEEDS, e.g. \"0 1 2\"] [RADII, e.g. \"0.3 0.4\"] [EPOCHS, e.g. 15]" >&2
  exit 2
fi
# shellcheck source=launch/_train_and_evaluate.sh
source "$(dirname "$0")/_train_and_evaluate.sh"
out=$1
read -r -a seeds <<< "${2:-0 1 2}"
read -r -a radii <<< "${3-0.1 0.2 0.3 0.4}"
epochs=${4:-7}
read -r -a trades_radii <<< "${TRADES_RADII-0.3}"
read -r -a iaat_radii <<< "${IAAT_RADII-0.3}"
require_whole_numbers seed "${seeds[@]}"
require_radii radius "${radii[@]}" "${trades_radii[@]}" "${iaat_radii[@]}"
require_epochs "$epochs"
cd "$(dirname "$0")/.."
evaluation=(--config.sweep_epsilons="(0.0,0.1,0.2,0.3,0.4)" --config.sweep_attack_steps=20
            --config.eval_suite="${SUITE:-autoattack_cpu}" --config.eval_suite_epsilons="${SUITE_EPSILONS:-(0.3,)}")
length=(); suffix=""
if [ "$epochs" != 7 ]; then length=(--config.num_epochs="$epochs"); suffix=_ep$epochs; fi
settings=()
if [ "${CLEAN:-1}" != 0 ]; then settings+=("clean$suffix:--config.method=clean ${length[*]}"); fi
for radius in "${radii[@]}"; do
  settings+=("pgd_eps$radius$suffix:--config.method=pgd --config.epsilon=$radius ${length[*]}")
done
for radius in "${trades_radii[@]}"; do
  settings+=("trades_eps$radius$suffix:--config.method=trades --config.epsilon=$radius ${length[*]}")
done
for radius in "${iaat_radii[@]}"; do
  settings+=("iaat_eps$radius$suffix:--config.method=iaat --config.epsilon=$radius ${length[*]} ${IAAT_ARGS:-}")
done
train_and_evaluate_settings
