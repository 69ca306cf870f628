"""The paper's CIFAR-10 comparison in one command, and its cost before it starts.

Usage: launch/reproduce.sh SET OUT [--plan [--accelerator=h100,v4-8] [--utilisation=U]]
           [--seeds=0,1,2] [--command=TEMPLATE] [-- --config.NAME=VALUE ...]

SET is one of SETS (launch/reproduce_sets.py): `cifar10` (the paper's Figure 3 and Table 1,
measured with AutoAttack beside PGD: IAAT, PGD-AT at each radius of the frontier, TRADES,
clean training), `toy` (the same script at toy size on fake CIFAR-shaped data: the test's),
`methods_mnist5k` (every adversarial method on the embedded digits, a smoke of about 45 minutes
on 2 CPU cores). Every run trains into
OUT/NAME_seedS and is evaluated there (`--mode=evaluate`: the PGD sweep over test radii and the
AutoAttack suite), then OUT/report gets the figures (Pareto frontier, robustness curves, radii)
and report.md with the paper's table. A rerun skips finished trainings and evaluations; an
interrupted training resumes from its checkpoint. Logs: OUT/logs/NAME_seedS.{train,evaluate}.log.
Overrides after `--` apply to every run, e.g. `-- --config.data_dir=gs://BUCKET/tfds`.

--plan prints each run, its steps, FLOPs, hours on --accelerator and checkpoint disk, and the
total, and runs nothing (iaat_jax/analysis/cost.py says how each figure is counted).

--command runs each training and evaluation through a launcher: a template with {config},
{workdir} and {args} (the overrides, --mode=evaluate included), e.g.
  'launch/gpu.sh {config} {workdir} {args}'                      (all GPUs of this machine)
  'sbatch --wait --nodes=2 launch/gpu_slurm.sbatch {config} {workdir} {args}'      (SLURM)
  '{python} launch/tpu_pod.py --name=iaat --zone=us-central2-b --accelerator_type=v4-8
   --config={config} --workdir={workdir} -- {args}'          (a TPU slice; OUT is gs://)
Default: `python -m iaat_jax.main --config={config} --workdir={workdir} {args}` here.
"""

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "launch"))  # reproduce_sets beside this file
from reproduce_sets import SETS, ConfigSet, Setting  # noqa: E402

DEFAULT_COMMAND = "{python} -m iaat_jax.main --config={config} --workdir={workdir} {args}"


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str  # the directory under OUT
    setting: Setting
    seed: int
    extra: tuple[str, ...] = ()  # the caller's overrides of every run, e.g. its data_dir

    @property
    def overrides(self) -> list[str]:
        return [*self.setting.overrides, *self.extra, f"--config.seed={self.seed}"]


def planned_runs(
    config_set: ConfigSet, seeds: tuple[int, ...], extra: tuple[str, ...] = ()
) -> list[PlannedRun]:
    return [
        PlannedRun(f"{setting.name}_seed{seed}", setting, seed, extra)
        for seed in seeds
        for setting in config_set.settings
    ]


def load_config(run: PlannedRun):
    """The run's config with its overrides, parsed as `main` parses them."""
    from absl import flags
    from ml_collections import config_flags

    from iaat_jax.run.workdir import with_current_flag_names

    argv = with_current_flag_names(
        ["reproduce", f"--config={REPO / run.setting.config}", *run.overrides]
    )
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    values(argv)
    return values.config


def command(template: str, run: PlannedRun, workdir: str, args: list[str]) -> list[str]:
    """The template's words with {config}, {workdir} and {python} filled, {args} expanded."""
    fields = {"config": run.setting.config, "workdir": workdir, "python": sys.executable}
    words = []
    for word in shlex.split(template):
        words += args if word == "{args}" else [word.format(**fields)]
    return words


def plan(runs: list[PlannedRun]) -> list[tuple[PlannedRun, object]]:
    """Each run with its cost (iaat_jax/analysis/cost.py's RunCost)."""
    from iaat_jax.analysis import cost

    costs, planned = {}, []
    for run in runs:
        config = load_config(run)
        # the seed and the radius change no FLOPs: one costing for every PGD-AT radius
        key = json.dumps(
            {k: v for k, v in config.to_dict().items() if k not in ("seed", "epsilon")},
            sort_keys=True,
            default=str,
        )
        if key not in costs:
            print(f"costing {run.setting.name} ...", file=sys.stderr, flush=True)
            costs[key] = cost.run_cost(config)
        planned.append((run, costs[key]))
    return planned


def plan_rows(planned: list, machine) -> list[dict]:
    """One record a run: its steps, FLOPs, hours on `machine` and checkpoint disk."""
    return [
        {
            "run": run.name,
            "accelerator": machine.name,
            "utilisation": machine.utilisation,
            "steps": found.train_steps,
            "steps_per_phase": found.steps_per_phase,
            "flops_per_step": found.flops_per_step,
            "train_flops": found.train_flops,
            "epoch_eval_flops": found.epoch_eval_flops,
            "final_eval_flops": found.final_eval_flops,
            "flops": found.flops,
            "hours": found.hours(machine),
            "chip_hours": found.hours(machine) * machine.chips,
            "checkpoint_bytes": found.checkpoint_bytes,
        }
        for run, found in planned
    ]


def print_plan(config_set: ConfigSet, rows: list[dict], machine) -> None:
    """The plan as a table, with its totals and assumptions."""
    print(f"\nplan: {config_set.what}")
    print(
        f"on {machine.name}: {machine.chips} chip(s) of {machine.chip_peak / 1e12:.0f} TFLOP/s "
        f"bf16 peak, {machine.utilisation:.0%} of it assumed (iaat_jax/analysis/cost.py says why)"
    )
    print(
        f"{'run':<16} {'steps':>7} {'train FLOPs':>12} {'eval FLOPs':>11} {'hours':>7} "
        f"{'chip-hours':>10} {'disk GB':>8}"
    )
    for row in rows + [
        {
            "run": "total",
            "steps": sum(row["steps"] for row in rows),
            **{
                name: sum(row[name] for row in rows)
                for name in ("train_flops", "epoch_eval_flops", "final_eval_flops", "hours")
                + ("chip_hours", "checkpoint_bytes")
            },
        }
    ]:
        train_flops = row["train_flops"] + row["epoch_eval_flops"]
        print(
            f"{row['run']:<16} {row['steps']:>7} {train_flops:>12.3g} "
            f"{row['final_eval_flops']:>11.3g} {row['hours']:>7.2f} {row['chip_hours']:>10.1f} "
            f"{row['checkpoint_bytes'] / 1e9:>8.2f}"
        )
    print(
        "train FLOPs include the per-epoch PGD check; eval FLOPs (--mode=evaluate) count every "
        "test example through every attack of the suite, an upper bound; disk: the checkpoints "
        "kept and the radius table."
    )


class Interrupted(Exception):
    """Ctrl-C during a command: the command was left to stop itself (training saves)."""


def execute(words: list[str], log: Path) -> int:
    """Run a command with its output in `log`; its exit status. On Ctrl-C (which reaches
    the command too) it waits for the command to stop on its own, then raises Interrupted."""
    with log.open("a") as stream:
        stream.write(f"$ {shlex.join(words)}\n")
        stream.flush()
        process = subprocess.Popen(words, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT)
        try:
            return process.wait()
        except KeyboardInterrupt:
            try:
                process.wait()
            except KeyboardInterrupt:  # a second Ctrl-C: stop it now
                process.kill()
            raise Interrupted from None


def local_home(out: str) -> Path:
    """Where logs and the report go: OUT itself, or for a gs:// OUT a local directory."""
    from iaat_jax.run import files

    if not files.is_url(out):
        return Path(out)
    return Path("reproduce_out") / out.split("://", 1)[1].strip("/")


def reproduce(config_set: ConfigSet, runs: list[PlannedRun], out: str, template: str) -> int:
    """Train and evaluate every run not done yet, then draw the report; an exit status."""
    import jax

    jax.config.update("jax_platforms", "cpu")  # its checks only: the accelerator is the runs'
    from iaat_jax import errors
    from iaat_jax.run import files, train

    logs = local_home(out) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def say(line: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {line}", flush=True)

    for index, run in enumerate(runs, start=1):
        workdir = files.join(out, run.name)
        where = f"{index}/{len(runs)} {run.name}:"
        if files.exists(files.join(workdir, "eval.json")):
            say(f"{where} evaluated before: skipped")
            continue
        config = load_config(run)
        try:
            finished = train.finished_at(config, workdir)
        except errors.ConfigError as error:
            print(f"error: {run.name}: {error}", file=sys.stderr)
            return 2
        steps = [("evaluate", [*run.overrides, "--mode=evaluate", *config_set.evaluation])]
        if finished is None:
            steps.insert(0, ("train", run.overrides))
        for what, args in steps:
            log = logs / f"{run.name}.{what}.log"
            say(f"{where} {what} (log: {log})")
            try:
                status = execute(command(template, run, workdir, args), log)
            except Interrupted:
                print(f"interrupted during {what} {run.name}: rerun to resume", file=sys.stderr)
                return 130
            if status:
                print(
                    f"error: {what} {run.name} failed (exit {status}): see {log}", file=sys.stderr
                )
                return 1
            if what == "train" and train.finished_at(config, workdir) is None:
                print(
                    f"error: training {run.name} stopped before its last step (a signal or "
                    f"--stop): see {log}; rerun to resume it",
                    file=sys.stderr,
                )
                return 1
    report = local_home(out) / "report"
    say(f"report: {report}/report.md")
    suite = config_set.evaluation_suite
    words = [sys.executable, "-m", "iaat_jax.report", *(files.join(out, r.name) for r in runs)]
    words += [f"--out={report}", f"--test_epsilon={config_set.test_epsilon}"]
    words += [f"--suite={suite}"] if suite else []
    if status := execute(words, logs / "report.log"):
        print(f"error: the report failed (exit {status}): see {logs}/report.log", file=sys.stderr)
        return 1
    return 0


def check_template(template: str) -> str | None:
    """What is wrong with a --command template, or None."""
    fields = "{config}, {workdir} and {args} (a word of its own); {python} if you like"
    try:
        words = shlex.split(template)
        for word in words:
            if word != "{args}":
                word.format(config="c", workdir="w", python="p")
    except (ValueError, KeyError, IndexError) as error:
        return f"--command={template!r} does not parse ({error!r}): it takes {fields}"
    needed = [f for f in ("{config}", "{workdir}") if not any(f in w for w in words)]
    needed += [] if "{args}" in words else ["{args}"]
    if needed:
        return f"--command={template!r} lacks {', '.join(needed)}: it takes {fields}"
    return None


def absolute_data_dir(override: str) -> str:
    """A relative --config.data_dir as seen from the caller (the commands run elsewhere)."""
    name, _, value = override.partition("=")
    if name == "--config.data_dir" and value and "://" not in value:
        return f"{name}={os.path.abspath(value)}"
    return override


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="launch/reproduce.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("set", help=f"one of: {', '.join(SETS)}")
    parser.add_argument("out", help="directory of the runs and the report (local or gs://)")
    parser.add_argument("--plan", action="store_true", help="print the cost, run nothing")
    parser.add_argument("--json", action="store_true", help="with --plan: one JSON line a run")
    parser.add_argument(
        "--accelerator",
        default="h100",
        help="with --plan: h100, v4-8, ... (comma-separated: several)",
    )
    parser.add_argument(
        "--utilisation", type=float, default=None, help="with --plan: share of peak reached"
    )
    parser.add_argument("--seeds", default=None, help="comma-separated (default: the set's)")
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="launcher template")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="after --: overrides of every run, e.g. -- --config.data_dir=gs://BUCKET/tfds",
    )
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if not o.startswith("--config.")]
    if bad:
        parser.error(f"{bad[0]} is not a --config.NAME=VALUE override (they follow --)")
    if args.set not in SETS:
        parser.error(f"unknown set '{args.set}': use one of {', '.join(SETS)}")
    try:
        args.seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        parser.error(f"--seeds={args.seeds} is not a comma-separated list of whole numbers")
    if problem := check_template(args.command):
        parser.error(problem)
    if not args.out.startswith("gs://") and "://" not in args.out:
        args.out = os.path.abspath(args.out)  # the commands run from the repository root
    args.overrides = [absolute_data_dir(o) for o in args.overrides]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config_set = SETS[args.set]
    runs = planned_runs(config_set, args.seeds or config_set.seeds, tuple(args.overrides))
    if not args.plan:
        return reproduce(config_set, runs, args.out, args.command)
    from iaat_jax.analysis import cost

    try:
        machines = [cost.accelerator(a, args.utilisation) for a in args.accelerator.split(",")]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    planned = plan(runs)
    for machine in machines:
        rows = plan_rows(planned, machine)
        if args.json:
            print("\n".join(json.dumps(row) for row in rows))
        else:
            print_plan(config_set, rows, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
