"""Where metrics go: TensorBoard (clu), <workdir>/metrics.jsonl, and a console line with ETA."""

import json
import time

import numpy as np
from absl import logging
from etils import epath


class MetricsLog:
    """Writes each record to TensorBoard (numbers only) and as one JSON line (primary host)."""

    def __init__(self, workdir: epath.Path, is_primary: bool):
        self._writer = _tensorboard_writer(workdir, is_primary)
        self._path = epath.Path(workdir) / "metrics.jsonl"
        self._is_primary = is_primary

    def drop_after(self, step: int) -> None:
        """On resume, forget records past the restored step (they will be written again)."""
        if not (self._is_primary and self._path.exists()):
            return
        lines = self._path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= step]
        self._path.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, record: dict) -> None:
        scalars = {
            k: float(v)
            for k, v in record.items()
            if isinstance(v, int | float | np.number) and k != "step"
        }
        if self._writer is not None:
            self._writer.write_scalars(step, scalars)
        if self._is_primary:
            with self._path.open("a") as file:
                file.write(json.dumps({"step": step, **record}, default=_plain) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def _plain(value):
    """JSON for numpy scalars and arrays."""
    return value.item() if getattr(value, "ndim", 1) == 0 else value.tolist()


def write_scalars(workdir: epath.Path, step: int, scalars: dict[str, float]) -> None:
    """One-off TensorBoard scalars (e.g. an evaluation) in `workdir`."""
    writer = _tensorboard_writer(workdir, is_primary=True)
    if writer is not None:
        writer.write_scalars(step, scalars)
        writer.flush()
        writer.close()


def _tensorboard_writer(workdir: epath.Path, is_primary: bool):
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
