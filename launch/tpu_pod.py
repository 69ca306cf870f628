"""Train on a Cloud TPU VM slice; survive spot preemption and a dropped launcher.

It creates (or reuses) the slice, ships this working tree to every worker, installs it into a
virtual environment with Python 3.11 (uv, from PyPI, brings its own interpreter where the
image's python3 is 3.10), and starts training detached from ssh on every worker. Then it polls
until every worker is done; a preempted slice is deleted, recreated and started again, and the
run resumes from the newest checkpoint in the gs:// workdir. Stopping the launcher (Ctrl-C, a
closed laptop) never stops training: run the same command again to re-attach.

Usage (from a machine with gcloud, authenticated, and this checkout):
  python launch/tpu_pod.py --name=iaat --zone=us-central2-b --accelerator_type=v4-32 --spot \\
      --config=configs/imagenet.py --workdir=gs://BUCKET/runs/imagenet \\
      -- --config.data_dir=gs://BUCKET/tensorflow_datasets
  python launch/tpu_pod.py --name=iaat --zone=us-central2-b --accelerator_type=v4-32 --status
  (--logs: each worker's last lines; --stop: save a checkpoint and stop; --dry_run: print every
  command, remote ones verbatim, and run none)

On each worker: ~/iaat_jax (the code), ~/iaat_jax_venv (Python 3.11 with requirements.txt and
jax[tpu]), ~/iaat_jax_job/ (run.sh, train.log, pid, exit_status). Each worker's log is also
copied to WORKDIR/launch_logs/<start time>-worker-<i>.log as it grows, and fetched into
--log_dir at the end. A slice preempted while no launcher runs stays PREEMPTED (training is
gone, checkpoints are in the workdir) until the launcher is run again: docs/launch.md.
"""

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the launch modules beside this file
from tpu_inputs import RUNTIME_IMAGES, dataset_problem, generation_and_count  # noqa: E402
from tpu_launcher import REPO, Launcher  # noqa: E402
from tpu_worker import STATUS_COMMAND  # noqa: E402


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python launch/tpu_pod.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", required=True, help="TPU VM name")
    parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
    parser.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
    parser.add_argument("--accelerator_type", required=True, help="e.g. v4-32, v5litepod-16")
    parser.add_argument(
        "--runtime_version",
        default=None,
        help="TPU VM image (default by generation: v2-v4 tpu-ubuntu2204-base, v5e "
        "v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)",
    )
    parser.add_argument("--spot", action="store_true", help="a spot (preemptible) slice")
    parser.add_argument("--config", help="a config file of this checkout, e.g. configs/imagenet.py")
    parser.add_argument("--workdir", help="a gs:// directory every worker can reach")
    parser.add_argument("--max_retries", type=int, default=10, help="restarts at most (10)")
    parser.add_argument("--log_dir", default=None, help="local logs (default launch_logs/NAME)")
    parser.add_argument("--delete", action="store_true", help="delete the slice at the end")
    parser.add_argument("--poll_seconds", type=int, default=60, help="between polls (60)")
    parser.add_argument(
        "--log_copy_seconds", type=int, default=60, help="between copies of the logs to gs:// (60)"
    )
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run none")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="the slice's and each worker's state")
    what.add_argument("--logs", action="store_true", help="each worker's last --lines log lines")
    what.add_argument("--stop", action="store_true", help="save a checkpoint and stop the job")
    parser.add_argument("--lines", type=int, default=20, help="with --logs (20)")
    parser.add_argument(
        "--rehearsal",
        action="store_true",
        help="launch/rehearse_pod.sh only: accept local directories and CPU devices",
    )
    parser.add_argument("overrides", nargs="*", help="after --: --config.NAME=VALUE ...")
    args = parser.parse_args(argv)
    generation, _ = generation_and_count(args.accelerator_type)
    args.runtime_version = args.runtime_version or RUNTIME_IMAGES[generation]
    if args.status or args.logs or args.stop:
        return args
    if not args.config or not args.workdir:
        parser.error("--config and --workdir are needed to launch (or --status, --logs, --stop)")
    if not args.workdir.startswith("gs://") and not args.rehearsal:
        parser.error(f"--workdir={args.workdir} is not a gs:// path that every worker can reach")
    config = Path(os.path.abspath(args.config))
    if not config.is_file() or not config.is_relative_to(REPO):
        parser.error(f"--config={args.config} is not a config file of this checkout ({REPO})")
    args.config = str(config.relative_to(REPO))
    if args.max_retries < 0 or args.poll_seconds < 0 or args.log_copy_seconds < 1:
        parser.error("--max_retries and --poll_seconds must be >= 0, --log_copy_seconds >= 1")
    if problem := dataset_problem(args, REPO):
        parser.error(problem)
    return args


def run_command(argv: list[str], capture: bool) -> tuple[int, str]:
    result = subprocess.run(argv, capture_output=capture, text=True)
    if not capture:
        return result.returncode, ""
    if result.returncode and result.stderr.strip():
        print(result.stderr.strip().splitlines()[-1], file=sys.stderr)
        return result.returncode, result.stderr
    return result.returncode, result.stdout


class DryRun:
    """Print each command, a remote one verbatim below its gcloud line; the slice does not
    exist until it is created, and every worker's job finishes at the first poll."""

    def __init__(self):
        self.created = False

    def __call__(self, argv: list[str], capture: bool) -> tuple[int, str]:
        remote = [a for a in argv if a.startswith("--command=")]
        shown = [a if not a.startswith("--command=") else '--command="$REMOTE"' for a in argv]
        print(f"$ {shlex.join(shown)}".replace("'--command=\"$REMOTE\"'", '--command="$REMOTE"'))
        if remote:
            print("  REMOTE:\n" + "\n".join(f"  | {line}" for line in remote[0][10:].split("\n")))
        self.created |= "create" in argv
        if "describe" in argv:
            return (0, "READY\n") if self.created else (1, "NOT_FOUND")
        if any(a == f"--command={STATUS_COMMAND}" for a in argv):
            return 0, "exit:0\t\t(dry run)\n"
        return 0, ""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runner = DryRun() if args.dry_run else run_command
    launcher = Launcher(args, runner, sleep=(lambda _: None) if args.dry_run else time.sleep)
    if args.dry_run:
        print("dry run: nothing is created, shipped or started; these are the commands", flush=True)
    if args.status:
        return launcher.show_status()
    if args.logs:
        return launcher.show_logs()
    if args.stop:
        launcher.stop_workers()
        return 0
    try:
        status = launcher.run()
    except KeyboardInterrupt:
        print("\nlauncher stopped; training goes on: rerun the command to re-attach", flush=True)
        return 130
    if args.dry_run:
        print("dry run: done; nothing was created, shipped or started", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
