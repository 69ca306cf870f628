"""What launch/tpu_pod.py runs on each TPU VM worker, and how it reads the answers.

Every command here is a shell string sent with `gcloud compute tpus tpu-vm ssh --command`;
`--dry_run` prints them verbatim. On each worker: ~/iaat_jax (the shipped tree),
~/iaat_jax_venv (Python 3.11, requirements.txt, jax[tpu]) and ~/iaat_jax_job/ (run.sh,
train.log, pid, boot, train_pid, exit_status, workdir, copy.log).
"""

import dataclasses
import re
import shlex

JAX_VERSION = "0.10.2"  # requirements.txt's pin; jax[tpu] at the same version
UV_VERSION = "0.13.9"  # uv from PyPI: the interpreter and the install
PYTHON_VERSION = "3.11"  # the pins need >= 3.11; the TPU images ship 3.10
CODE, VENV, JOB = "iaat_jax", "iaat_jax_venv", "iaat_jax_job"  # directories in each worker's ~
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # a pid from before a reboot is not our job
ALIVE = (  # shell: whether this worker's job (run.sh) runs, in ~/iaat_jax_job
    f'alive() {{ [ -f pid ] && [ "$(cat boot 2>/dev/null)" = "$(cat {BOOT_ID})" ] '
    '&& kill -0 "$(cat pid)" 2>/dev/null; }'
)


@dataclasses.dataclass
class WorkerStatus:
    """One worker's job: `state` is none, running, lost (gone without an exit status: its VM
    restarted), exited (`exit_status` set), stopped (a checkpoint saved on SIGTERM, or killed
    by it) or unknown (no answer)."""

    state: str
    exit_status: int | None = None
    workdir: str = ""
    last_line: str = ""
    stop_requested: bool = False

    @classmethod
    def parse(cls, text: str) -> "WorkerStatus":
        """The status command's line: STATE<TAB>WORKDIR<TAB>LAST LOG LINE."""
        lines = [line for line in text.split("\n") if line.count("\t") >= 2]
        if not lines:
            return cls("none" if text.strip() == "none" else "unknown")
        state, workdir, last_line = lines[-1].split("\t", 2)
        stop_requested = state.endswith("+stop_requested")
        state = state.removesuffix("+stop_requested")
        exit_status = None
        if re.fullmatch(r"exit:\d+", state):
            exit_status, state = int(state[5:]), "exited"
        if state not in ("none", "running", "lost", "exited", "stopped"):
            state = "unknown"
        return cls(state, exit_status, workdir, last_line, stop_requested)


def install_command() -> str:
    """Unpack the shipped tree; get uv with the image's python3 (pip --user, whatever its
    version); a venv with Python 3.11 (uv finds one or downloads it); the pins and jax[tpu]
    into it; then check the interpreter. Runs on every worker."""
    uv, python = "~/.local/bin/uv", f"~/{VENV}/bin/python"
    check = (
        "import sys, jax; v = sys.version.split()[0]; ok = sys.version_info >= (3, 11); "
        'print(f"iaat_jax: Python {v}, jax {jax.__version__}" if ok else '
        'f"error: the venv has Python {v}; the pins need >= 3.11"); sys.exit(0 if ok else 1)'
    )
    return " && ".join(
        [
            f"rm -rf ~/{CODE} && mkdir -p ~/{CODE} && tar -xzf ~/{CODE}.tgz -C ~/{CODE}",
            f"python3 -m pip install --user --quiet --disable-pip-version-check uv=={UV_VERSION}",
            f"{uv} venv --quiet --allow-existing --python {PYTHON_VERSION} ~/{VENV}",
            f"{uv} pip install --quiet --python {python} -r ~/{CODE}/requirements.txt "
            f"'jax[tpu]=={JAX_VERSION}'",
            f"{python} -c {shlex.quote(check)}",
        ]
    )


def job_script(train_argv: list[str], remote_log: str, copy_seconds: int) -> str:
    """run.sh: training; its log, copied to the workdir every `copy_seconds` and at the end;
    its outcome in ~/iaat_jax_job/exit_status: a number, or 'stopped' where it saved a
    checkpoint on SIGTERM (or died of one) and is to be resumed. A SIGTERM sent to the whole
    job (a VM shutdown) is passed on to training, which saves its checkpoint."""
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            "# iaat_jax training, detached from the ssh session that started it (setsid nohup)",
            f"job=~/{JOB}; log=$job/train.log",
            'exec 9> "$job/lock"; flock -n 9 || exit 0  # one job per worker, even if ssh retried',
            f'copy_log() {{ gcloud storage cp --quiet "$log" {shlex.quote(remote_log)}'
            ' >> "$job/copy.log" 2>&1; }',
            f"( while sleep {copy_seconds}; do copy_log; done ) &",
            "copier=$!",
            f"cd ~/{CODE}",
            # set before training starts: a SIGTERM in between must not end run.sh unrecorded
            'train=; trap \'[ -n "$train" ] && kill -TERM "$train" 2>/dev/null\' TERM INT HUP',
            f'{shlex.join(train_argv)} >> "$log" 2>&1 &',
            'train=$!; echo "$train" > "$job/train_pid"',
            'while wait "$train"; status=$?; kill -0 "$train" 2>/dev/null; do :; done',
            'wait "$train"; status=$?',
            'kill "$copier" 2>/dev/null; wait "$copier" 2>/dev/null',
            'if [ "$status" = 143 ] || { [ "$status" = 0 ] && grep -q "^stopped by " "$log"; }',
            "then status=stopped; fi",
            'echo "$status" > "$job/exit_status"',
            "copy_log",
        ]
    )


def start_command(worker: int, workdir: str, script: str) -> str:
    """Start run.sh detached on one worker, unless a job already runs there."""
    return "\n".join(
        [
            f"mkdir -p ~/{JOB} && cd ~/{JOB} || exit 1",
            ALIVE,
            "if alive; then",
            f'  echo "iaat_jax: worker {worker} already runs a job (pid $(cat pid))"; exit 0',
            "fi",
            "rm -f exit_status stop_requested train_pid",
            "[ -f train.log ] && mv train.log train.previous.log  # the last job's, also in gs://",
            f"printf '%s\\n' {shlex.quote(workdir)} > workdir",
            f"cat {BOOT_ID} > boot",
            "cat > run.sh <<'IAAT_JAX_RUN'",
            script,
            "IAAT_JAX_RUN",
            "setsid nohup bash run.sh > /dev/null 2>&1 < /dev/null &",
            "echo $! > pid",
            f'echo "iaat_jax: worker {worker} started (pid $!)"',
        ]
    )


STATUS_COMMAND = "\n".join(
    [
        f"cd ~/{JOB} 2>/dev/null || {{ echo none; exit 0; }}",
        ALIVE,
        'if [ -f exit_status ]; then state="exit:$(cat exit_status)"',
        '  [ "$(cat exit_status)" = stopped ] && state=stopped',
        "elif alive; then state=running",
        "else state=lost; fi",
        '[ -f stop_requested ] && state="$state+stop_requested"',
        # the last non-empty line; a progress bar's carriage returns count as line ends
        "last=$(tail -c 4000 train.log 2>/dev/null | tr '\\r\\t' '\\n ' | grep -v '^ *$'"
        " | tail -n 1)",
        'printf \'%s\\t%s\\t%s\\n\' "$state" "$(cat workdir 2>/dev/null)" "$last"',
    ]
)
STOP_COMMAND = (
    f"cd ~/{JOB} 2>/dev/null && touch stop_requested && "
    'kill -TERM "$(cat train_pid)" 2>/dev/null; echo "iaat_jax: stop requested"'
)


def logs_command(lines: int) -> str:
    return f"tail -n {lines} ~/{JOB}/train.log 2>/dev/null || echo '(no log yet)'"
