"""Train on a Cloud TPU VM slice, surviving spot preemption: create (or reuse) the slice, install
this checkout on every worker, run on all workers with one log each, and when the slice is
preempted recreate it and rerun the same command, which resumes from the newest checkpoint in
the gs:// workdir.

Usage (from a machine with gcloud, authenticated, and this checkout):
  python launch/tpu_pod.py --name=iaat --zone=us-central2-b --accelerator_type=v4-32 --spot \\
      --config=configs/imagenet.py --workdir=gs://BUCKET/runs/imagenet \\
      -- --config.data_dir=gs://BUCKET/tensorflow_datasets
Add --dry_run to print every gcloud command instead of running it, --delete to delete the
slice when training ends, --max_retries=N to bound the recreations (default 10).
Logs: LOG_DIR/worker-<i>.log for each worker (default launch_logs/<name>), fetched after each
attempt. The workdir and data_dir must be gs:// paths that every worker can reach.
"""

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JAX_VERSION = "0.10.2"  # requirements.txt's pin; jax[tpu] at the same version
REMOTE_DIR = "iaat_jax"
REMOTE_LOG = "iaat_jax_train.log"
GONE_STATES = ("PREEMPTED", "TERMINATED", "NOT_FOUND")  # recreate the slice after these

# Runs a command: (argv, capture) -> (exit status, stdout).
Runner = Callable[[list[str], bool], tuple[int, str]]


def workers_of(accelerator_type: str) -> int:
    """Number of TPU VM hosts of a slice. v2/v3/v4/v5p names count TensorCores, 8 per host
    (v4/v5p: 4 chips of 2 cores); v5e/v6e names count chips: one host up to 8, else 4 per host."""
    match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)", accelerator_type)
    if not match:
        raise SystemExit(
            f"error: unknown --accelerator_type={accelerator_type}: use e.g. v4-32, v5p-64, "
            "v5litepod-16 or v6e-16"
        )
    kind, count = match.group(1), int(match.group(2))
    if kind in ("v5litepod", "v5e", "v6e"):
        return 1 if count <= 8 else count // 4
    return max(count // 8, 1)


class Launcher:
    """The gcloud steps of one training job on a TPU VM slice."""

    def __init__(self, args: argparse.Namespace, runner: Runner):
        self.args, self.runner = args, runner
        self.where = [f"--zone={args.zone}"] + (
            [f"--project={args.project}"] if args.project else []
        )
        self.workers = workers_of(args.accelerator_type)
        self.log_dir = Path(args.log_dir or f"launch_logs/{args.name}")

    def gcloud(self, *argv: str, capture: bool = False) -> tuple[int, str]:
        return self.runner(["gcloud", "compute", "tpus", "tpu-vm", *argv, *self.where], capture)

    def state(self) -> str:
        """READY, CREATING, PREEMPTED, ... or NOT_FOUND."""
        status, out = self.gcloud("describe", self.args.name, "--format=value(state)", capture=True)
        return out.strip() if status == 0 and out.strip() else "NOT_FOUND"

    def create(self) -> None:
        spot = ["--spot"] if self.args.spot else []
        status, _ = self.gcloud(
            "create",
            self.args.name,
            f"--accelerator-type={self.args.accelerator_type}",
            f"--version={self.args.runtime_version}",
            *spot,
        )
        if status:
            raise SystemExit(f"error: could not create TPU {self.args.name} (exit {status})")

    def delete(self) -> None:
        self.gcloud("delete", self.args.name, "--quiet")

    def install(self) -> None:
        """Copy this checkout (git archive of HEAD) to every worker and install it there."""
        archive = "/tmp/iaat_jax_checkout.tgz"
        self.runner(
            ["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", archive, "HEAD"], False
        )
        self.gcloud("scp", archive, f"{self.args.name}:iaat_jax.tgz", "--worker=all")
        commands = (
            f"mkdir -p {REMOTE_DIR} && tar -xzf iaat_jax.tgz -C {REMOTE_DIR} && cd {REMOTE_DIR}"
            f" && python3 -m pip install -q -r requirements.txt 'jax[tpu]=={JAX_VERSION}'"
        )
        status, _ = self.gcloud("ssh", self.args.name, "--worker=all", f"--command={commands}")
        if status:
            raise SystemExit(f"error: installing on {self.args.name} failed (exit {status})")

    def train(self) -> int:
        """Run the training command on every worker at once; its exit status."""
        flags = [
            f"--config={self.args.config}",
            f"--workdir={self.args.workdir}",
            *self.args.overrides,
        ]
        command = (
            f"cd {REMOTE_DIR} && python3 -m iaat_jax.main --multihost "
            f"{' '.join(shlex.quote(f) for f in flags)} >> ~/{REMOTE_LOG} 2>&1"
        )
        return self.gcloud("ssh", self.args.name, "--worker=all", f"--command={command}")[0]

    def fetch_logs(self) -> None:
        if not self.args.dry_run:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for worker in range(self.workers):
            target = self.log_dir / f"worker-{worker}.log"
            self.gcloud("scp", f"{self.args.name}:{REMOTE_LOG}", str(target), f"--worker={worker}")

    def run(self) -> int:
        """Create or reuse, install, train; recreate and rerun after a preemption."""
        for attempt in range(self.args.max_retries + 1):
            state = self.state()
            fresh = state in GONE_STATES
            if fresh:
                if state != "NOT_FOUND":
                    print(
                        f"TPU {self.args.name} is {state}: deleting and recreating it", flush=True
                    )
                    self.delete()
                self.create()
            if fresh or attempt == 0:
                self.install()
            print(f"attempt {attempt + 1}: training on {self.workers} workers", flush=True)
            status = self.train()
            self.fetch_logs()
            if status == 0:
                print(f"training finished; logs in {self.log_dir}", flush=True)
                if self.args.delete:
                    self.delete()
                return 0
            state = self.state()
            if state not in GONE_STATES:  # the slice is fine, so the run itself failed
                print(
                    f"error: training failed (exit {status}) on a {state} slice: see "
                    f"{self.log_dir}",
                    file=sys.stderr,
                )
                return 1
            print(f"TPU {self.args.name} was {state} during training: resuming", flush=True)
        print(f"error: gave up after {self.args.max_retries} recreations", file=sys.stderr)
        return 1


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python launch/tpu_pod.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--name", required=True, help="TPU VM name")
    parser.add_argument("--zone", required=True, help="e.g. us-central2-b")
    parser.add_argument("--project", default=None, help="GCP project (default: gcloud's)")
    parser.add_argument("--accelerator_type", required=True, help="e.g. v4-32, v5litepod-16")
    parser.add_argument("--runtime_version", default="tpu-ubuntu2204-base")
    parser.add_argument("--spot", action="store_true", help="a spot (preemptible) slice")
    parser.add_argument("--config", required=True, help="e.g. configs/imagenet.py")
    parser.add_argument("--workdir", required=True, help="a gs:// directory")
    parser.add_argument("--max_retries", type=int, default=10, help="recreations at most")
    parser.add_argument("--log_dir", default=None, help="default launch_logs/<name>")
    parser.add_argument("--delete", action="store_true", help="delete the slice at the end")
    parser.add_argument("--dry_run", action="store_true", help="print the gcloud commands only")
    parser.add_argument("overrides", nargs="*", help="after --: --config.NAME=VALUE ...")
    args = parser.parse_args(argv)
    if not args.workdir.startswith("gs://") and not args.dry_run:
        parser.error(f"--workdir={args.workdir} is not a gs:// path that every worker can reach")
    if args.max_retries < 0:
        parser.error("--max_retries must be >= 0")
    return args


def run_command(argv: list[str], capture: bool) -> tuple[int, str]:
    result = subprocess.run(argv, capture_output=capture, text=True)
    return result.returncode, result.stdout if capture else ""


def print_command(argv: list[str], capture: bool) -> tuple[int, str]:
    """The dry run: print the command; describe finds no slice, everything else succeeds."""
    print(shlex.join(argv), flush=True)
    return (1, "") if "describe" in argv else (0, "")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return Launcher(args, print_command if args.dry_run else run_command).run()


if __name__ == "__main__":
    sys.exit(main())
