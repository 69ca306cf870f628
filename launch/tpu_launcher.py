"""The launcher's decisions for one training job on a Cloud TPU VM slice (launch/tpu_pod.py is
its command line): create or reuse the slice, ship and install this tree, start training
detached on every worker, poll, recreate a preempted slice and start again, fetch the logs.
Every gcloud call goes through a `Runner`, so tests script the cloud and --dry_run prints it.
"""

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tpu_inputs import workers_of, working_tree
from tpu_worker import (
    CODE,
    JOB,
    STATUS_COMMAND,
    STOP_COMMAND,
    VENV,
    WorkerStatus,
    install_command,
    job_script,
    logs_command,
    start_command,
)

REPO = Path(__file__).resolve().parent.parent
GONE_STATES = ("PREEMPTED", "TERMINATED", "NOT_FOUND")  # recreate the slice after these
ATTEMPTS = 10  # reads of the slice or the workers that may fail in a row before giving up

# Runs a command: (argv, capture) -> (exit status, stdout; on failure, stderr).
Runner = Callable[[list[str], bool], tuple[int, str]]


class Launcher:
    """The gcloud steps of one training job on a TPU VM slice."""

    def __init__(self, args: argparse.Namespace, runner: Runner, sleep=time.sleep):
        self.args, self.runner, self.sleep = args, runner, sleep
        self.where = [f"--zone={args.zone}"] + (
            [f"--project={args.project}"] if args.project else []
        )
        self.workers = workers_of(args.accelerator_type)
        self.log_dir = Path(args.log_dir or f"launch_logs/{args.name}")
        self.installed = False
        self.archive: Path | None = None  # the tree shipped by this invocation, built once
        self.parallel = not args.dry_run  # the workers in parallel; a dry run prints in order

    def gcloud(self, *argv: str, capture: bool = False) -> tuple[int, str]:
        return self.runner(["gcloud", "compute", "tpus", "tpu-vm", *argv, *self.where], capture)

    def ssh(self, worker: int | str, command: str, capture: bool = False) -> tuple[int, str]:
        return self.gcloud(
            "ssh", self.args.name, f"--worker={worker}", f"--command={command}", capture=capture
        )

    def each_worker(self, command: Callable[[int], str], capture=False) -> list[tuple[int, str]]:
        """ssh to every worker at once (one at a time in a dry run), answers in worker order."""
        calls = [lambda w=w: self.ssh(w, command(w), capture) for w in range(self.workers)]
        if not self.parallel:
            return [call() for call in calls]
        with ThreadPoolExecutor(max_workers=min(self.workers, 32)) as pool:
            return list(pool.map(lambda call: call(), calls))

    def say(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    # The slice.

    def state(self) -> str:
        """READY, CREATING, PREEMPTED, ..., NOT_FOUND, or UNREACHABLE (describe failed for
        another reason: a network error is not a preemption)."""
        status, out = self.gcloud("describe", self.args.name, "--format=value(state)", capture=True)
        if status == 0 and out.strip():
            return out.strip()
        return "NOT_FOUND" if "not_found" in out.lower().replace(" ", "_") else "UNREACHABLE"

    def settled_state(self) -> str:
        """READY or one of GONE_STATES, waiting through CREATING, RESTARTING, REPAIRING..."""
        unreachable = 0
        while (state := self.state()) not in ("READY", *GONE_STATES):
            if state in ("STOPPED", "STOPPING"):
                raise SystemExit(
                    f"error: TPU {self.args.name} is {state}: start it (gcloud compute tpus "
                    "tpu-vm start) or delete it, then rerun"
                )
            unreachable = unreachable + 1 if state == "UNREACHABLE" else 0
            if unreachable >= ATTEMPTS:
                raise SystemExit(f"error: gcloud cannot describe TPU {self.args.name}: see above")
            self.say(f"TPU {self.args.name} is {state}: waiting")
            self.sleep(self.args.poll_seconds)
        return state

    def create(self) -> bool:
        spot = ["--spot"] if self.args.spot else []
        status, _ = self.gcloud(
            "create",
            self.args.name,
            f"--accelerator-type={self.args.accelerator_type}",
            f"--version={self.args.runtime_version}",
            *spot,
        )
        if status:
            self.say(f"could not create TPU {self.args.name} (exit {status})")
        return status == 0

    def delete(self) -> None:
        self.gcloud("delete", self.args.name, "--quiet")

    # The job.

    def install(self) -> None:
        """Ship the working tree as it was when this launcher started (untracked files
        included, ignored ones not) to every worker and install it there."""
        if self.archive is None:
            archive = Path(tempfile.gettempdir()) / f"{CODE}-{self.args.name}.tgz"
            git = ["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", str(archive)]
            if self.runner([*git, working_tree(REPO)], False)[0]:
                raise SystemExit(f"error: git archive of {REPO} failed")
            self.archive = archive
        status, _ = self.gcloud(
            "scp", str(self.archive), f"{self.args.name}:{CODE}.tgz", "--worker=all"
        )
        if status:
            raise SystemExit(
                f"error: copying the code to {self.args.name} failed (exit {status}): if gcloud "
                "names an ssh key, run ssh-add ~/.ssh/google_compute_engine and rerun"
            )
        status, _ = self.ssh("all", install_command())
        if status:
            raise SystemExit(
                f"error: installing on {self.args.name} failed (exit {status}): see the lines "
                "above; the slice is left as it is (--delete it or rerun)"
            )
        self.installed = True

    def train_argv(self) -> list[str]:
        platform = "cpu" if self.args.rehearsal else "tpu"
        return [
            f"../{VENV}/bin/python",  # run from ~/iaat_jax
            "-m",
            "iaat_jax.main",
            "--multihost",
            f"--require_platform={platform}",
            f"--config={self.args.config}",
            f"--workdir={self.args.workdir}",
            *self.args.overrides,
        ]

    def start(self) -> None:
        """Start the job, detached, on every worker at once; each copies its log to the
        workdir."""
        started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

        def command(worker: int) -> str:
            remote_log = f"{self.args.workdir}/launch_logs/{started}-worker-{worker}.log"
            script = job_script(self.train_argv(), remote_log, self.args.log_copy_seconds)
            return start_command(worker, self.args.workdir, script)

        for worker, (status, _) in enumerate(self.each_worker(command)):
            if status:
                raise SystemExit(f"error: starting on worker {worker} failed (exit {status})")
        self.say(
            f"training on {self.workers} workers, detached: stopping this launcher does not "
            "stop it (rerun this command to re-attach; --status, --logs)"
        )

    def statuses(self) -> list[WorkerStatus] | None:
        """Each worker's job, or None where a worker cannot be reached or read."""
        found = [
            WorkerStatus.parse(out) if status == 0 else WorkerStatus("unknown")
            for status, out in self.each_worker(lambda _: STATUS_COMMAND, capture=True)
        ]
        return None if any(w.state == "unknown" for w in found) else found

    def read_statuses(self) -> list[WorkerStatus]:
        """statuses(), asked again while ssh fails (a slice being set up, a network error)."""
        for _ in range(ATTEMPTS):
            if (found := self.statuses()) is not None:
                return found
            self.sleep(self.args.poll_seconds)
        raise SystemExit(f"error: cannot read the jobs on {self.args.name} (ssh): see above")

    def wait_for_job(self) -> str:
        """Poll until the job ends: finished, failed, stopped (SIGTERM or a restarted VM:
        resume it), requested (stopped by --stop) or gone (the slice was preempted)."""
        last, unreadable = None, 0
        while True:
            self.sleep(self.args.poll_seconds)
            state = self.state()
            if state in GONE_STATES:
                return "gone"
            workers = self.statuses() if state == "READY" else None
            if workers is None:  # restarting, or ssh failed: ask again, not for ever
                unreadable += 1
                if unreadable >= ATTEMPTS * 6:
                    raise SystemExit(f"error: TPU {self.args.name} stayed {state}: see above")
                continue
            unreadable = 0
            if workers[0].last_line != last and workers[0].last_line:
                last = workers[0].last_line
                self.say(f"worker 0: {last}")
            failed = [(i, w) for i, w in enumerate(workers) if w.exit_status not in (None, 0)]
            if failed and self.state() in GONE_STATES:  # they died with their slice
                return "gone"
            for worker, status in failed:
                print(
                    f"error: worker {worker}'s training failed (exit {status.exit_status}): "
                    f"{status.last_line}",
                    file=sys.stderr,
                )
            if failed:
                return "failed"
            if any(w.state == "running" for w in workers):
                continue
            if self.state() in GONE_STATES:
                return "gone"
            if any(w.state in ("stopped", "lost", "none") for w in workers):
                return "requested" if any(w.stop_requested for w in workers) else "stopped"
            return "finished"

    def fetch_logs(self) -> None:
        if not self.args.dry_run:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        for worker in range(self.workers):
            target = self.log_dir / f"worker-{worker}.log"
            self.gcloud(
                "scp", f"{self.args.name}:{JOB}/train.log", str(target), f"--worker={worker}"
            )

    def stop_workers(self) -> None:
        self.each_worker(lambda _: STOP_COMMAND)

    def run(self) -> int:
        """Create or reuse the slice, install, start (or re-attach); recreate after a
        preemption and start again, which resumes from the workdir's newest checkpoint."""
        restarts = 0
        while True:
            state = self.settled_state()
            if state in GONE_STATES:
                if state != "NOT_FOUND":
                    self.say(f"TPU {self.args.name} is {state}: deleting and recreating it")
                    self.delete()
                if not self.create():
                    restarts += 1
                    if restarts > self.args.max_retries:
                        print(f"error: gave up after {restarts - 1} restarts", file=sys.stderr)
                        return 1
                    self.sleep(self.args.poll_seconds)
                    continue
                self.install()
                self.start()
            else:
                workers = self.read_statuses()
                running = [w for w in workers if w.state == "running"]
                others = {w.workdir for w in running} - {self.args.workdir}
                if others:
                    print(
                        f"error: TPU {self.args.name} runs another job (workdir "
                        f"{others.pop()}): --status shows it, --stop stops it",
                        file=sys.stderr,
                    )
                    return 2
                if running:
                    self.say(f"attaching to the job running on {self.args.name}")
                else:
                    if not self.installed:
                        self.install()
                    self.start()
            outcome = self.wait_for_job()
            if outcome in ("finished", "failed", "requested"):
                if outcome == "failed":
                    self.stop_workers()
                self.fetch_logs()
                if outcome == "failed":
                    print(f"error: training failed: logs in {self.log_dir}", file=sys.stderr)
                    return 1
                if self.args.dry_run:
                    self.say("dry run: a real launch polls as above until every worker is done")
                else:
                    done = "stopped by --stop" if outcome == "requested" else "training finished"
                    self.say(f"{done}; logs in {self.log_dir}")
                if self.args.delete:
                    self.delete()
                return 0
            restarts += 1
            if restarts > self.args.max_retries:
                print(f"error: gave up after {self.args.max_retries} restarts", file=sys.stderr)
                return 1
            why = "was preempted" if outcome == "gone" else "stopped on SIGTERM or a VM restart"
            self.say(f"the job {why} (restart {restarts} of at most {self.args.max_retries})")

    def show_status(self) -> int:
        state = self.state()
        print(f"TPU {self.args.name}: {state}")
        if state != "READY":
            return 0 if state in GONE_STATES else 1
        answers = self.each_worker(lambda _: STATUS_COMMAND, capture=True)
        for worker, (status, out) in enumerate(answers):
            line = WorkerStatus.parse(out) if status == 0 else WorkerStatus("unreachable")
            what = f"exit {line.exit_status}" if line.state == "exited" else line.state
            print(f"worker {worker}: {what} {line.workdir} | {line.last_line}")
        return 0

    def show_logs(self) -> int:
        for worker in range(self.workers):
            print(f"==> worker {worker} <==", flush=True)
            self.ssh(worker, logs_command(self.args.lines))
        return 0
