# Shared by the launch/*_mnist5k.sh studies; source it, do not run it.
# train_and_evaluate_settings trains every setting of the array `settings` ("name:overrides")
# for every seed of `seeds` on configs/default.py, in "$out/NAME_seedS", then evaluates each run
# with the overrides of the array `evaluation` (skipped where eval.json exists), logging to
# "$out/logs"; it appends each run's directory to the array `runs`, and reports them all.
# The caller sets out, seeds, settings and evaluation, and runs from the repository root.
# require_whole_numbers, require_radii and require_epochs check a script's arguments first:
# one line that names the bad value, exit status 2.

require_whole_numbers() {  # NAME VALUE...
  local name=$1 value; shift
  for value in "$@"; do
    [[ $value =~ ^[0-9]+$ ]] || { echo "error: $name '$value' is not a whole number" >&2; exit 2; }
  done
}

require_radii() {  # NAME VALUE...
  local name=$1 value; shift
  for value in "$@"; do
    [[ $value =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] \
      || { echo "error: $name '$value' is not a number in [0, 1], e.g. 0.3" >&2; exit 2; }
  done
}

require_epochs() {  # VALUE
  [[ $1 =~ ^[1-9][0-9]*$ ]] || { echo "error: EPOCHS '$1' is not a whole number >= 1" >&2; exit 2; }
}

train_and_evaluate_settings() {
  local python=${PYTHON:-.venv/bin/python} start=$SECONDS seed entry name
  local -a overrides
  if [ ${#settings[@]} -eq 0 ] || [ ${#seeds[@]} -eq 0 ]; then
    echo "error: nothing to train (no setting or no seed): give a seed and at least one of CLEAN, RADII, TRADES_RADII or IAAT_RADII" >&2
    exit 2
  fi
  mkdir -p "$out/logs"
  runs=()
  for seed in "${seeds[@]}"; do
    for entry in "${settings[@]}"; do
      name=${entry%%:*}_seed$seed
      read -r -a overrides <<< "${entry#*:} --config.seed=$seed"
      runs+=("$out/$name")
      echo "[$((SECONDS - start))s] train $name"
      "$python" -m iaat_jax.main --config=configs/default.py --workdir="$out/$name" "${overrides[@]}" \
        2> "$out/logs/$name.train.log" \
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
}
