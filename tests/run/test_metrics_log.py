"""metrics.jsonl as a resume needs it, numpy-safe records, and the console's rate and ETA."""

import json

import numpy as np
import pytest

from iaat_jax.run import metrics_log


def records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_records_are_json_lines_and_a_resume_drops_those_past_its_step(tmp_path):
    log = metrics_log.MetricsLog(tmp_path, is_primary=True)
    for step in (10, 20, 30):
        log.write(step, {"train_loss": np.float32(step / 10), "epoch": np.int64(0), "tag": "x"})
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing claims a step before a commit
    log.commit(up_to=20)  # checkpoint 20 is complete, 30 is not yet
    assert [r["step"] for r in records(tmp_path)] == [10, 20]
    log.commit(up_to=30)
    log.close()
    assert [r["step"] for r in records(tmp_path)] == [10, 20, 30]
    assert records(tmp_path)[1] == {"step": 20, "train_loss": 2.0, "epoch": 0, "tag": "x"}
    resumed = metrics_log.MetricsLog(tmp_path, is_primary=True)
    resumed.drop_after(20)
    resumed.write(30, {"train_loss": 3.5})
    resumed.commit(up_to=30)
    resumed.close()
    assert [(r["step"], r["train_loss"]) for r in records(tmp_path)] == [
        (10, 1.0),
        (20, 2.0),
        (30, 3.5),
    ]
    assert list(tmp_path.glob("events.out.tfevents.*"))  # TensorBoard got the scalars too


def test_only_the_primary_host_writes(tmp_path):
    log = metrics_log.MetricsLog(tmp_path, is_primary=False)
    log.write(1, {"train_loss": 1.0})
    log.drop_after(0)
    log.commit(up_to=1)
    log.close()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_progress_rate_and_eta(monkeypatch, caplog):
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(metrics_log.time, "perf_counter", lambda: next(clock))
    progress = metrics_log.Progress(first_step=0, last_step=1000)
    rate = progress.interval(50)  # 50 steps in 10 s
    assert rate == pytest.approx(5.0)
    with caplog.at_level("INFO"):
        progress.report(50, 0, 7, rate, "loss 1.0")
    assert "step 50/1000 (5%)" in caplog.text and "ETA 3m10s" in caplog.text  # 950 steps / 5


@pytest.mark.parametrize(
    "seconds, text", [(42.4, "42s"), (185, "3m05s"), (3720, "1h02m"), (0, "0s")]
)
def test_format_seconds(seconds, text):
    assert metrics_log.format_seconds(seconds) == text
