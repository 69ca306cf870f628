# Shared by the launch/*_mnist5k.sh studies; source it, do not run it.
# train_and_evaluate_settings trains every setting of the array `settings` ("name:overrides")
# for every seed of `seeds` on configs/default.py, in "$out/NAME_seedS", then evaluates each run
# with the overrides of the array `evaluation` (skipped where eval.json exists), logging to
# "$out/logs"; it appends each run's directory to the array `runs`, and reports them all.
# The caller sets out, seeds, settings and evaluation, and runs from the repository root.

train_and_evaluate_settings() {
  local python=${PYTHON:-.venv/bin/python} start=$SECONDS seed entry name
  local -a overrides
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
