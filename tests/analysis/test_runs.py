"""Reading a run directory: what training and evaluation left, and clear errors for the rest."""

import json

import numpy as np
import pytest
from etils import epath

from iaat_jax.analysis.runs import ReportError, Run, group_by_setting, load_run, trained


def write_run(path, records, sweep=None, table=None):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"method": "iaat", "epsilon": 0.3}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if sweep is not None:
        (path / "eval.json").write_text(json.dumps(sweep))
    if table is not None:
        np.save(path / "epsilon_table.npy", table)


def test_a_run_reads_its_evaluations_sweep_and_table(tmp_path):
    records = [
        {"step": 10, "train_loss": 1.0},
        {"step": 40, "clean_accuracy": 0.8, "robust_accuracy": 0.5},
        {"step": 80, "clean_accuracy": 0.9, "robust_accuracy": 0.6},
    ]
    sweep = {"clean_accuracy": 0.91, "worst_case": [{"epsilon": 0.2, "robust_accuracy": 0.7}]}
    write_run(tmp_path / "run", records, sweep, np.arange(4, dtype=np.float32))
    run = load_run(str(tmp_path / "run"))
    assert (run.name, run.method, run.train_epsilon) == ("run", "iaat", 0.3)
    assert [r["step"] for r in run.epoch_evals] == [40, 80]
    assert run.clean_accuracy() == 0.91  # the sweep's, when there is one
    assert run.robust_accuracy(0.2) == 0.7
    # never the per-epoch PGD number, not even at the training radius
    assert run.robust_accuracy(0.3) is None and run.robust_accuracy(0.1) is None
    np.testing.assert_array_equal(run.table, np.arange(4))


def test_a_held_out_runs_table_is_its_trained_ids_only(tmp_path):
    write_run(tmp_path / "run", [{"step": 1}], table=np.arange(10, dtype=np.float32))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["validation_examples"] = 3  # ids 7-9 never trained: kept out of every figure
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    np.testing.assert_array_equal(load_run(str(tmp_path / "run")).table, np.arange(7))


def test_without_a_sweep_the_last_epoch_gives_clean_accuracy_only(tmp_path):
    write_run(tmp_path / "run", [{"step": 40, "clean_accuracy": 0.8, "robust_accuracy": 0.5}])
    run = load_run(str(tmp_path / "run"))
    assert run.sweep is None and run.table is None
    assert run.clean_accuracy() == 0.8 and run.robust_accuracy(0.3) is None


def test_a_suite_is_read_by_name_and_the_worst_case_is_the_default():
    sweep = {
        "clean_accuracy": 0.9,
        "worst_case": [{"epsilon": 0.3, "robust_accuracy": 0.60}],
        "autoattack": [{"suite": "autoattack", "epsilon": 0.3, "robust_accuracy": 0.62}],
    }
    run = Run(epath.Path("r"), {"method": "iaat", "epsilon": 0.3}, [], sweep, None)
    assert run.robust_accuracy(0.3) == 0.60
    assert run.robust_accuracy(0.3, "autoattack") == 0.62
    assert run.robust_accuracy(0.3, "apgd") is None  # a suite it did not run: nothing


def test_a_directory_that_is_no_run_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        load_run(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="holds no training run"):
        load_run(str(tmp_path / "empty"))


def test_a_damaged_metrics_line_or_table_names_the_file_and_line(tmp_path):
    write_run(tmp_path / "run", [{"step": 10, "train_loss": 1.0}])
    with open(tmp_path / "run" / "metrics.jsonl", "a") as file:
        file.write('{"step": 20, "train_lo\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl line 2 is damaged"):
        load_run(str(tmp_path / "run"))
    write_run(tmp_path / "other", [{"step": 10, "train_loss": 1.0}])
    (tmp_path / "other" / "epsilon_table.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(ReportError, match=r"epsilon_table.npy is not a readable .npy array"):
        load_run(str(tmp_path / "other"))


def run_of(name, seed, epsilon, clean, robust) -> Run:
    """A run in memory: a setting (method, epsilon), a seed and its sweep's numbers."""
    sweep = {
        "clean_accuracy": clean,
        "worst_case": [{"epsilon": 0.3, "robust_accuracy": robust}],
    }
    config = {"method": "pgd", "epsilon": epsilon, "seed": seed, "data_dir": f"/d{seed}"}
    config["eval_suite"] = "autoattack" if seed else "apgd"  # how it was evaluated: no matter
    return Run(epath.Path(name), config, [], sweep, None)


def test_seeds_of_one_setting_are_grouped_and_a_run_that_did_not_train_is_kept():
    runs = [
        run_of("a0", 0, 0.3, 0.92, 0.65),
        run_of("b0", 0, 0.1, 0.98, 0.20),
        run_of("a1", 1, 0.3, 0.11, 0.10),  # collapsed to chance: reported, not dropped
        run_of("a2", 2, 0.3, 0.93, 0.66),
    ]
    groups = group_by_setting(runs)
    assert [[r.name for r in g] for g in groups] == [["a0", "a1", "a2"], ["b0"]]
    assert [trained(r) for r in runs] == [True, True, False, True]


def test_did_not_train_is_judged_against_the_datasets_class_count():
    run = run_of("c", 0, 0.03, 0.05, 0.01)  # 5%: far above chance on CIFAR-100, not on 10
    assert not trained(run)
    run.config["dataset"] = "cifar100"
    assert trained(run)
