"""The TPU pod launch, rehearsed end to end on this machine (run by launch/rehearse_pod.sh).

launch/tpu_pod.py runs unchanged against the stand-in gcloud of this folder (a slice of
WORKERS hosts, each 2 fake CPU devices, their python3 a real 3.10) on the default config for a
short run, with a local directory as the gs:// workdir (--rehearsal). Two scenarios:
  preempted:  create, install, detached training, the slice preempted mid-run (every worker
              process killed), recreate, reinstall, resume, finish, fetch logs;
  reattached: the launcher killed mid-run and run again: it re-attaches, and training never
              stops, restarts or runs twice.
Both must end with exactly the epsilon table and parameters of an unbroken run of the same
config on the same topology (WORKERS local processes). The last line printed is one JSON
object; the exit status is 0 only if every check held.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # iaat_jax, to read the runs' results
STANDIN = REPO / "launch" / "rehearsal"
OVERRIDES = [  # the default config, shortened: warm-up epoch, then the adaptive rule
    "--config.num_epochs=2",
    "--config.iaat_warmup_epochs=1",
    "--config.epsilon_ramp_epochs=1",
    "--config.num_train_steps=70",
    "--config.checkpoint_every_steps=10",
    "--config.eval_attack_steps=2",
]
INTERRUPT_AT_STEP = 30  # preempt / kill the launcher once this checkpoint exists
TIMEOUT = 900  # seconds for any one wait


def log(message: str) -> None:
    print(f"[rehearsal {time.strftime('%H:%M:%S')}] {message}", flush=True)


def newest_checkpoint(workdir: Path) -> int:
    steps = [int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps, default=-1)


def wait_for(predicate, what: str, launcher: subprocess.Popen) -> None:
    deadline = time.time() + TIMEOUT
    while not predicate():
        if launcher.poll() is not None:
            raise RuntimeError(f"the launcher ended (exit {launcher.returncode}) before {what}")
        if time.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(1)


class Rehearsal:
    def __init__(self, root: Path, workers: int):
        self.root, self.workers = root, workers
        self.env = {**os.environ, "PATH": f"{STANDIN}:{os.environ['PATH']}"}
        self.env.pop("XLA_FLAGS", None)
        self.env.pop("JAX_PLATFORMS", None)

    def gcloud(self, *argv: str) -> str:
        return subprocess.run(
            ["gcloud", *argv], env=self.env, capture_output=True, text=True, check=True
        ).stdout

    def launcher(self, name: str, *extra: str) -> subprocess.Popen:
        """launch/tpu_pod.py in its own session (so that killing it kills only it)."""
        argv = [
            sys.executable,
            str(REPO / "launch" / "tpu_pod.py"),
            "--name=rehearsal",
            "--zone=local-a",
            f"--accelerator_type=v4-{8 * self.workers}",
            "--spot",
            "--config=configs/default.py",
            f"--workdir={self.root / 'runs' / name}",
            f"--log_dir={self.root / 'logs' / name}",
            "--rehearsal",
            "--poll_seconds=2",
            "--log_copy_seconds=5",
            *extra,
            "--",
            *OVERRIDES,
        ]
        out = open(self.root / f"launcher-{name}.log", "a")
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def launcher_log(self, name: str) -> str:
        return (self.root / f"launcher-{name}.log").read_text()

    def worker_home(self, index: int) -> Path:
        return self.root / "cloud" / f"worker-{index}" / "home"

    def unbroken(self) -> None:
        """The reference: WORKERS local processes, no launcher, no interruption."""
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            port = probe.getsockname()[1]
        processes = []
        for index in range(self.workers):
            env = {
                **os.environ,
                "HOME": str(self.root / f"unbroken-home-{index}"),
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                "JAX_NUM_PROCESSES": str(self.workers),
                "JAX_PROCESS_ID": str(index),
            }
            out = open(self.root / f"unbroken-{index}.log", "w")
            argv = [
                sys.executable,
                "-m",
                "iaat_jax.main",
                "--multihost",
                "--config=configs/default.py",
                f"--workdir={self.root / 'runs' / 'unbroken'}",
                *OVERRIDES,
            ]
            processes.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out))
        if any(p.wait(TIMEOUT) for p in processes):
            raise RuntimeError(f"the unbroken run failed: see {self.root}/unbroken-*.log")

    def preempted(self) -> bool:
        """Preempt the slice mid-run; the launcher recreates it and the run resumes."""
        workdir = self.root / "runs" / "preempted"
        launcher = self.launcher("preempted")
        wait_for(lambda: newest_checkpoint(workdir) >= INTERRUPT_AT_STEP, "a checkpoint", launcher)
        log(f"preempting the slice at checkpoint {newest_checkpoint(workdir)}")
        self.gcloud("standin", "preempt", "rehearsal")
        status = launcher.wait(TIMEOUT)
        events = (self.root / "cloud" / "events.log").read_text().split()
        logs = sorted((workdir / "launch_logs").glob("*-worker-*.log"))
        first_logs = [p for p in logs if p.name.startswith(logs[0].name.split("-worker")[0])]
        resumed = all("Resumed from" in p.read_text() for p in logs if p not in first_logs)
        checks = {
            "launcher exit 0": status == 0,
            "recreated after PREEMPTED": events.count("PREEMPTED") == 1
            and events.count("READY") == 2,
            "a log per worker and start in the workdir": len(logs) == 2 * self.workers,
            "the preempted workers' logs survived": all(p.stat().st_size > 0 for p in first_logs),
            "the second start resumed": resumed,
            "logs fetched": len(list((self.root / "logs" / "preempted").glob("worker-*.log")))
            == self.workers,
        }
        return self.report("preempted", checks)

    def reattached(self) -> bool:
        """Kill the launcher mid-run; training goes on; a second launcher re-attaches."""
        workdir = self.root / "runs" / "reattached"
        first = self.launcher("reattached")
        wait_for(lambda: newest_checkpoint(workdir) >= INTERRUPT_AT_STEP, "a checkpoint", first)
        pids = [
            (self.worker_home(i) / "iaat_jax_job" / "train_pid").read_text()
            for i in range(self.workers)
        ]
        log(f"killing the launcher (pid {first.pid}) at checkpoint {newest_checkpoint(workdir)}")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(2)
        alive = all(Path(f"/proc/{pid.strip()}").exists() for pid in pids)
        status_out = subprocess.run(
            [
                sys.executable,
                "launch/tpu_pod.py",
                "--name=rehearsal",
                "--zone=local-a",
                f"--accelerator_type=v4-{8 * self.workers}",
                "--status",
            ],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
        ).stdout
        second = self.launcher("reattached")
        status = second.wait(TIMEOUT)
        pids_after = [
            (self.worker_home(i) / "iaat_jax_job" / "train_pid").read_text()
            for i in range(self.workers)
        ]
        starts = [
            (self.worker_home(i) / "iaat_jax_job" / "train.log").read_text().count("] train: ")
            for i in range(self.workers)
        ]
        checks = {
            "training survived the launcher": alive,
            "--status showed every worker running": status_out.count(": running ") == self.workers,
            "the second launcher attached": "attaching to the job"
            in self.launcher_log("reattached"),
            "launcher exit 0": status == 0,
            "the same processes to the end": pids_after == pids,
            "each worker started training once": starts == [1] * self.workers,
        }
        return self.report("reattached", checks)

    def report(self, name: str, checks: dict) -> bool:
        for what, ok in checks.items():
            log(f"{name}: {'ok' if ok else 'FAILED'}: {what}")
        return all(checks.values())

    def worker_python(self) -> str:
        python = self.worker_home(0) / "iaat_jax_venv" / "bin" / "python"
        return subprocess.run(
            [str(python), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
        ).stdout.strip()


def same_result(root: Path, name: str) -> bool:
    """The final epsilon table and parameters equal the unbroken run's, exactly."""
    import jax
    import numpy as np

    from iaat_jax import trained

    def result(run: str):
        classifier = trained.load(str(root / "runs" / run))
        return classifier.step, classifier.epsilon_table, classifier.variables

    step, table, variables = result(name)
    step0, table0, variables0 = result("unbroken")
    same = step == step0 and np.array_equal(table, table0)
    leaves = jax.tree.leaves(jax.tree.map(lambda a, b: np.array_equal(a, b), variables, variables0))
    log(
        f"{name}: step {step} vs {step0}, tables equal {np.array_equal(table, table0)}, "
        f"{sum(leaves)}/{len(leaves)} variables equal"
    )
    return same and all(leaves)


def main() -> int:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    root = Path(os.environ["IAAT_STANDIN_ROOT"]).parent
    start = time.time()
    rehearsal = Rehearsal(root, workers)
    log(f"{workers} workers in {root}; the unbroken reference run first")
    rehearsal.unbroken()
    log("scenario 1: preemption")
    preempted = rehearsal.preempted()
    python = rehearsal.worker_python()
    log("scenario 2: the launcher killed and re-invoked")
    reattached = rehearsal.reattached()
    matches = same_result(root, "preempted") and same_result(root, "reattached")
    ok = preempted and reattached and matches and python.startswith("3.11")
    print(
        json.dumps(
            {
                "rehearsal": "ok" if ok else "failed",
                "workers": workers,
                "python": python,
                "preempted_and_resumed": preempted,
                "launcher_killed_and_reattached": reattached,
                "matches_unbroken_run": matches,
                "seconds": round(time.time() - start),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
