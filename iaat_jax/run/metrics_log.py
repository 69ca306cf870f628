"""Where metrics go: TensorBoard (clu), <workdir>/metrics.jsonl, and a console line with ETA."""

import json
import logging as python_logging
import time

import numpy as np
from absl import logging

from iaat_jax.run import files


class MetricsLog:
    """Records to TensorBoard (numbers only, at once) and to metrics.jsonl (primary host).

    metrics.jsonl is rewritten atomically at `commit`, which the loop calls once a checkpoint is
    safely saved: the file never claims a step that a rerun would not resume from.
    """

    def __init__(self, workdir, is_primary: bool):
        self._writer = _tensorboard_writer(workdir, is_primary)
        self._path = files.join(workdir, "metrics.jsonl")
        self._is_primary = is_primary
        self._lines: list[str] = []  # committed: what the file holds
        self._pending: list[tuple[int, str]] = []  # (step, line)

    def drop_after(self, step: int, carried: list[str] = ()) -> None:
        """On resume: keep the records up to the restored step (a damaged line is dropped), and
        add those of `carried` (the checkpoint's own records) that the file does not hold: a
        kill after the checkpoint committed and before the file did loses none."""
        if not self._is_primary:
            return
        text = files.read_text(self._path) if files.exists(self._path) else ""
        kept, damaged = [], 0
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                damaged += 1
                continue
            if isinstance(record, dict) and record.get("step", step + 1) <= step:
                kept.append(line + "\n")
        if damaged:
            logging.warning("%s: dropped %d damaged line(s) on resume.", self._path, damaged)
        last = json.loads(kept[-1])["step"] if kept else -1
        kept += [line for line in carried if last < json.loads(line)["step"] <= step]
        self._lines = kept
        if text or kept:
            files.write_text(self._path, "".join(kept))

    def write(self, step: int, record: dict) -> None:
        scalars = {
            k: float(v)
            for k, v in record.items()
            if isinstance(v, int | float | np.number) and k != "step"
        }
        if self._writer is not None:
            self._writer.write_scalars(step, scalars)
        if self._is_primary:
            line = json.dumps({"step": step, **record}, default=_plain) + "\n"
            self._pending.append((step, line))

    def uncommitted(self, up_to: int) -> list[str]:
        """The records of steps <= `up_to` not yet in metrics.jsonl (a checkpoint carries
        them)."""
        return [line for step, line in self._pending if step <= up_to]

    def commit(self, up_to: int) -> None:
        """Write the records of steps <= `up_to` to metrics.jsonl (once checkpoint `up_to` is
        complete); later ones wait for a later checkpoint."""
        if not self._is_primary:
            return
        done = [line for step, line in self._pending if step <= up_to]
        self._pending = [(step, line) for step, line in self._pending if step > up_to]
        if done:
            self._lines += done
            files.write_text(self._path, "".join(self._lines))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def _plain(value):
    """JSON for numpy scalars and arrays."""
    return value.item() if getattr(value, "ndim", 1) == 0 else value.tolist()


def write_scalars(workdir, step: int, scalars: dict[str, float]) -> None:
    """One-off TensorBoard scalars (e.g. an evaluation) in `workdir`."""
    writer = _tensorboard_writer(workdir, is_primary=True)
    if writer is not None:
        writer.write_scalars(step, scalars)
        writer.flush()
        writer.close()


def _tensorboard_writer(workdir, is_primary: bool):
    """clu's TensorBoard writer on the primary host; None elsewhere or without TensorBoard."""
    if not is_primary:
        return None
    try:
        from clu import metric_writers
    except ImportError as error:
        logging.warning("No TensorBoard summaries (%s); metrics.jsonl is still written.", error)
        return None
    return metric_writers.SummaryWriter(str(workdir))


class Progress:
    """Steps per second and ETA (from the recent rate: IAAT steps slow down after warm-up)."""

    def __init__(self, first_step: int, last_step: int):
        self._last_step = last_step
        self._mark_step, self._mark_time = first_step, time.perf_counter()

    def restart(self, step: int) -> None:
        """Measure the next rate from here (after an evaluation, which is not a training step)."""
        self._mark_step, self._mark_time = step, time.perf_counter()

    def interval(self, step: int) -> float:
        """Steps per second since the last call; resets the mark."""
        now = time.perf_counter()
        rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        return rate

    def report(self, step: int, epoch: int, num_epochs: int, rate: float, text: str) -> None:
        eta = (self._last_step - step) / max(rate, 1e-9)
        logging.info(
            "epoch %d/%d step %d/%d (%.0f%%) | %.2f steps/s | %s | ETA %s",
            epoch + 1,
            num_epochs,
            step,
            self._last_step,
            100.0 * step / max(self._last_step, 1),
            rate,
            text,
            format_seconds(eta),
        )


def format_seconds(seconds: float) -> str:
    """'1h02m', '3m05s' or '42s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _QuietLibraries(python_logging.Filter):
    """Keep the libraries' chatter off the console: orbax's and TFDS's INFO lines, TensorFlow's
    deprecation notes, and JAX's note that there is no TPU on a CPU or GPU machine."""

    def filter(self, record: python_logging.LogRecord) -> bool:
        path = record.pathname
        if "Unable to initialize backend" in str(record.msg):
            return False
        if "/tensorflow/" in path and path.endswith("deprecation.py"):
            return False
        chatty = ("/orbax/", "/tensorflow_datasets/", "/tensorflow/", "/absl/logging/")
        return record.levelno >= python_logging.WARNING or not any(c in path for c in chatty)


def quiet_libraries() -> None:
    """Filter library chatter (the CLI and the notebook call this): on absl's console handler,
    and on the loggers it comes from, for consoles with handlers of their own (Jupyter)."""
    for target in (
        logging.get_absl_handler(),
        python_logging.getLogger("absl"),
        python_logging.getLogger("jax._src.xla_bridge"),
    ):
        if not any(isinstance(f, _QuietLibraries) for f in target.filters):
            target.addFilter(_QuietLibraries())
