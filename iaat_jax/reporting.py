"""Where metrics go: TensorBoard (clu), <workdir>/metrics.jsonl, and a console line with ETA."""

import json
import time

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
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
        if self._writer is not None:
            self._writer.write_scalars(step, scalars)
        if self._is_primary:
            with self._path.open("a") as file:
                file.write(json.dumps({"step": step, **record}) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()


def _tensorboard_writer(workdir: epath.Path, is_primary: bool):
    """clu's TensorBoard writer, or None where TensorFlow/TensorBoard are not installed."""
    try:
        from clu import metric_writers
    except ImportError as error:
        logging.warning("No TensorBoard summaries (%s); metrics.jsonl is still written.", error)
        return None
    return metric_writers.create_default_writer(str(workdir), just_logging=not is_primary)


class Progress:
    """Steps per second and ETA over the steps of this process's run."""

    def __init__(self, first_step: int, last_step: int):
        self._first_step, self._last_step = first_step, last_step
        self._start = time.perf_counter()
        self._mark_step, self._mark_time = first_step, self._start

    def interval(self, step: int) -> tuple[float, float]:
        """(steps/s since the last call, seconds since the last call), and reset the mark."""
        now = time.perf_counter()
        seconds = max(now - self._mark_time, 1e-9)
        rate = (step - self._mark_step) / seconds
        self._mark_step, self._mark_time = step, now
        return rate, seconds

    def report(
        self, step: int, epoch: int, num_epochs: int, steps_per_second: float, text: str
    ) -> None:
        elapsed = time.perf_counter() - self._start
        done = max(step - self._first_step, 1)
        eta = elapsed / done * (self._last_step - step)
        percent = 100.0 * step / max(self._last_step, 1)
        logging.info(
            "epoch %d/%d step %d/%d (%.0f%%) | %.2f steps/s | %s | ETA %s",
            epoch + 1,
            num_epochs,
            step,
            self._last_step,
            percent,
            steps_per_second,
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
