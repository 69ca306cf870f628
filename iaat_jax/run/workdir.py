"""What a workdir keeps about its run: the config that started it, and who is writing to it.

A rerun resumes the run in its workdir, so it must be the same run: fields that change what the
checkpoint means (dataset, model, method, radii, batch, schedule, seed, ...) may not change on
resume; those in RESUMABLE_FIELDS may (where data lives, how often to log or save, how to
evaluate). One process writes a workdir at a time: a lock file names it; a lock whose process is
gone (same host) or whose heartbeat is older than LOCK_STALE_SECONDS (any host) is taken over;
the writer refreshes it every HEARTBEAT_SECONDS from a thread of its own.
"""

import json
import os
import socket
import threading
import time

import ml_collections
from absl import logging

from iaat_jax.errors import ConfigError
from iaat_jax.run import files

RESUMABLE_FIELDS = frozenset(
    {
        "data_dir",
        "cache",
        "shuffle_buffer",
        "half_precision",
        "attack_unroll",
        "num_train_steps",
        "eval_batch_size",
        "eval_attack_steps",
        "eval_corruptions",
        "sweep_epsilons",
        "sweep_attack_steps",
        "sweep_step_size",
        "sweep_restarts",
        "sweep_losses",
        "eval_suite",
        "eval_suite_epsilons",
        # evaluation fields of earlier versions, still in older runs' config.json
        "sweep_apgd_losses",
        "sweep_apgd_steps",
        "sweep_apgd_targets",
        "log_every_steps",
        "tracked_ids",
        "checkpoints_to_keep",
        "checkpoint_every_steps",
    }
)
LOCK_STALE_SECONDS = 600
HEARTBEAT_SECONDS = 60


def config_path(workdir) -> str:
    return files.join(workdir, "config.json")


# Fields and values that older runs saved, and older commands set, under a name that has since
# changed: IAAT's hyper-parameters are named for their owner (TRADES, MART and FAB have a beta).
RENAMED_FIELDS = {"beta": "iaat_beta", "gamma": "iaat_gamma", "warmup_epochs": "iaat_warmup_epochs"}
RENAMED_VALUES = {("attack_batchnorm", "batch"): "global"}


def with_current_names(saved: dict) -> dict:
    """A saved config with RENAMED_FIELDS and RENAMED_VALUES given their current names."""
    saved = {RENAMED_FIELDS.get(n, n): v for n, v in saved.items()}
    return {n: RENAMED_VALUES.get((n, v), v) if isinstance(v, str) else v for n, v in saved.items()}


def with_current_flag_names(argv: list[str]) -> list[str]:
    """`argv` with --config.OLD[=VALUE] for each of RENAMED_FIELDS as --config.NEW[=VALUE], so
    the command lines of older runs and scripts keep working."""

    def current(arg: str) -> str:
        name, equals, value = arg.partition("=")
        old = name.removeprefix("--config.")
        if name.startswith("--config.") and old in RENAMED_FIELDS:
            return f"--config.{RENAMED_FIELDS[old]}{equals}{value}"
        return arg

    return [current(arg) for arg in argv]


def differing_fields(config: ml_collections.ConfigDict, saved: dict) -> list[str]:
    """Fields outside RESUMABLE_FIELDS whose value differs from the saved config's. A field the
    saved config lacks (its run predates the field) differs only if set away from its default,
    which is the behaviour the code had before the field existed."""
    from iaat_jax.configs import default

    current, defaults = json.loads(config.to_json()), json.loads(default.get_config().to_json())
    saved = with_current_names(saved)
    saved = {**{n: defaults[n] for n in set(current) - set(saved) if n in defaults}, **saved}
    names = (set(current) | set(saved)) - RESUMABLE_FIELDS
    return sorted(name for name in names if current.get(name) != saved.get(name))


def check_same_run(config: ml_collections.ConfigDict, workdir) -> bool:
    """ConfigError if `workdir` holds a run of a different config; True if it holds one at all."""
    path = config_path(workdir)
    if not files.exists(path):
        return False
    try:
        saved = json.loads(files.read_text(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"{path} is damaged ({error}): restore it, or use a fresh --workdir"
        ) from error
    saved = with_current_names(saved)
    changed = differing_fields(config, saved)
    if changed:
        details = ", ".join(f"{n}={saved.get(n)!r} -> {config.get(n)!r}" for n in changed)
        raise ConfigError(
            f"{workdir} holds a run of another config ({details}): rerun with the config it "
            "was started with, or use a fresh --workdir"
        )
    return True


def save_config(config: ml_collections.ConfigDict, workdir) -> None:
    files.write_text(config_path(workdir), config.to_json(indent=2) + "\n")


def saved_config(workdir) -> ml_collections.ConfigDict:
    """The config that started the run in `workdir` (its config.json), with the default
    config's field types, so that --config.NAME=VALUE overrides parse as they do for a file."""
    import importlib

    path = config_path(workdir)
    if not files.exists(path):
        raise ConfigError(
            f"{workdir} holds no training run (no config.json): pass the --workdir of a run, "
            "or --config=FILE"
        )
    saved = with_current_names(json.loads(files.read_text(path)))
    config = importlib.import_module("iaat_jax.configs.default").get_config()
    with config.unlocked():
        for name, value in saved.items():
            config[name] = tuple(value) if isinstance(value, list) else value
    return config


def get_config(workdir: str) -> ml_collections.ConfigDict:
    """Makes this file a config file: `--config=iaat_jax/run/workdir.py:DIR` is DIR's saved config
    (what `--mode=evaluate --workdir=DIR` uses when no --config is given)."""
    return saved_config(workdir)


class WorkdirLock:
    """<workdir>/LOCK: host, pid and heartbeat of the one process writing the workdir."""

    def __init__(self, workdir):
        self.path = files.join(workdir, "LOCK")
        self.owner = {"host": socket.gethostname(), "pid": os.getpid()}
        self._released, self._beating = threading.Event(), None

    def _holder(self) -> dict | None:
        if not files.exists(self.path):
            return None
        try:
            return json.loads(files.read_text(self.path))
        except (ValueError, OSError):
            return None  # a torn lock file holds nobody

    def _alive(self, holder: dict) -> bool:
        if time.time() - holder.get("heartbeat", 0) > LOCK_STALE_SECONDS:
            return False
        if holder.get("host") == self.owner["host"]:
            try:
                os.kill(int(holder["pid"]), 0)
            except (ProcessLookupError, ValueError, KeyError):
                return False
            except PermissionError:
                return True
        return True

    def acquire(self) -> None:
        holder = self._holder()
        if holder and holder.get("pid") != self.owner["pid"] and self._alive(holder):
            raise ConfigError(
                f"workdir is in use by process {holder.get('pid')} on {holder.get('host')} "
                f"(its lock {self.path} was refreshed {time.time() - holder['heartbeat']:.0f} s "
                "ago): wait for it to finish or stop it, or use another --workdir"
            )
        self.heartbeat()

    def heartbeat(self) -> None:
        files.write_text(self.path, json.dumps({**self.owner, "heartbeat": time.time()}))

    def keep_alive(self, every_seconds: float = HEARTBEAT_SECONDS) -> None:
        """Refresh the heartbeat from a daemon thread until `release` (a failed write, e.g. a
        gs:// hiccup, is logged and retried at the next beat)."""

        def beat():
            while not self._released.wait(every_seconds):
                try:
                    self.heartbeat()
                except Exception as error:  # noqa: BLE001  (the next beat tries again)
                    logging.warning("refreshing %s failed (%s)", self.path, error)

        self._released.clear()
        self._beating = threading.Thread(target=beat, name="workdir-heartbeat", daemon=True)
        self._beating.start()

    def release(self) -> None:
        self._released.set()
        if self._beating is not None:
            self._beating.join()
        holder = self._holder()
        if holder and holder.get("pid") == self.owner["pid"]:
            files.remove(self.path)
