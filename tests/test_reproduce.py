"""launch/reproduce.py: the launcher template, the configs as main parses them, what a rerun
skips, a bad accelerator, and the toy-size set end to end against the benchmark's FLOPs and
each run's eval.json (slow)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cli_env

from iaat_jax.analysis import frontier
from iaat_jax.run import train

spec = importlib.util.spec_from_file_location("reproduce", REPO / "launch" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def test_overrides_by_a_fields_older_name_are_parsed_as_main_parses_them():
    setting = next(s for s in reproduce.SETS["methods_mnist5k"].settings if s.name == "iaat")
    run = reproduce.PlannedRun("iaat_seed0", setting, 0, ("--config.gamma=0.05",))
    assert reproduce.load_config(run).iaat_gamma == 0.05


def test_a_launcher_template_gets_the_config_the_workdir_and_every_argument():
    setting = next(s for s in reproduce.SETS["cifar10"].settings if s.name == "pgd_eps4")
    run = reproduce.PlannedRun("pgd_eps4_seed1", setting, 1)
    args = [*run.overrides, "--mode=evaluate"]
    words = reproduce.command("launch/gpu.sh {config} {workdir} {args}", run, "out/x", args)
    assert words == [
        "launch/gpu.sh",
        "configs/cifar10_pgd.py",
        "out/x",
        f"--config.epsilon={4 / 255:.10g}",
        "--config.seed=1",
        "--mode=evaluate",
    ]
    default_words = reproduce.command(reproduce.DEFAULT_COMMAND, run, "out/x", [])
    assert default_words == [
        sys.executable,
        "-m",
        "iaat_jax.main",
        "--config=configs/cifar10_pgd.py",
        "--workdir=out/x",
    ]


def test_the_cifar10_set_parses_as_main_parses_it():
    setting = next(s for s in reproduce.SETS["cifar10"].settings if s.name == "pgd_eps4")
    config = reproduce.load_config(
        reproduce.PlannedRun("x", setting, 2, ("--config.data_dir=/data", "--config.seed=9"))
    )
    assert config.method == "pgd" and config.seed == 2 and config.num_epochs == 200
    assert config.data_dir == "/data"  # the caller's overrides, though never the seed
    assert config.epsilon == pytest.approx(4 / 255)
    trades_setting = next(s for s in reproduce.SETS["cifar10"].settings if s.name == "trades")
    trades = reproduce.load_config(reproduce.PlannedRun("y", trades_setting, 0))
    assert trades.method == "trades" and trades.trades_beta == 6.0


def test_a_bad_accelerator_is_one_line_and_exit_2():
    result = subprocess.run(
        [sys.executable, "launch/reproduce.py", "toy", "/tmp/x", "--plan", "--accelerator=k80"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=cli_env(),
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown accelerator 'k80'")


def test_a_rerun_trains_only_what_is_unfinished_and_evaluates_only_what_is_unevaluated(
    tmp_path, monkeypatch, capsys
):
    config_set = reproduce.SETS["toy"]
    evaluated, trained, fresh = reproduce.planned_runs(config_set, (0,))
    (tmp_path / evaluated.name).mkdir()
    (tmp_path / evaluated.name / "eval.json").write_text("{}")
    done = {trained.name}  # runs whose training has its last checkpoint
    monkeypatch.setattr(
        train, "finished_at", lambda config, workdir: 3 if workdir.split("/")[-1] in done else None
    )
    executed = []

    def execute(words, log, finishes=True):  # a training command finishes its run
        executed.append(words)
        if finishes and "--mode=evaluate" not in words and "iaat_jax.report" not in words:
            done.add(fresh.name)
        return 0

    monkeypatch.setattr(reproduce, "execute", execute)
    status = reproduce.reproduce(config_set, [evaluated, trained, fresh], str(tmp_path), "{args}")
    assert status == 0
    assert executed[:3] == [
        [*trained.overrides, "--mode=evaluate", *config_set.evaluation],
        fresh.overrides,
        [*fresh.overrides, "--mode=evaluate", *config_set.evaluation],
    ]
    assert executed[3][1:3] == ["-m", "iaat_jax.report"] and len(executed) == 4
    assert "1/3 iaat_seed0: evaluated before: skipped" in capsys.readouterr().out

    executed.clear()  # a training stopped before its end (exit 0) is not evaluated
    done.discard(fresh.name)
    monkeypatch.setattr(reproduce, "execute", lambda words, log: execute(words, log, False))
    assert reproduce.reproduce(config_set, [fresh], str(tmp_path), "{args}") == 1
    assert executed == [fresh.overrides]
    assert "error: training pgd_eps8_seed0 stopped before its last step" in capsys.readouterr().err

    executed.clear()  # a failing command stops the study with its log's name
    monkeypatch.setattr(reproduce, "execute", lambda words, log: executed.append(words) or 1)
    assert reproduce.reproduce(config_set, [fresh], str(tmp_path), "{args}") == 1
    assert len(executed) == 1
    assert "error: train pgd_eps8_seed0 failed (exit 1): see" in capsys.readouterr().err


def test_every_documented_launcher_template_is_accepted_by_its_launcher(monkeypatch, tmp_path):
    """The templates of docs/reproduce.md pass the template check, and their words are what
    launch/gpu.sh and launch/tpu_pod.py take (tpu_pod.py parses them here)."""
    from test_tpu_pod import tpu_pod

    documented = (REPO / "docs" / "reproduce.md").read_text()
    templates = [
        line.split("`")[-2]
        for line in documented.splitlines()
        if line.startswith("| ") and "{workdir}" in line
    ]
    assert len(templates) == 4
    for template in templates:
        assert reproduce.check_template(template) is None, template
    setting = next(s for s in reproduce.SETS["cifar10"].settings if s.name == "pgd_eps4")
    run = reproduce.PlannedRun("pgd_eps4_seed0", setting, 0, ("--config.data_dir=gs://b/tfds",))
    args = [*run.overrides, "--mode=evaluate"]
    (tpu,) = [t for t in templates if "tpu_pod.py" in t]
    words = reproduce.command(tpu, run, "gs://b/out/pgd_eps4_seed0", args)
    assert words[:2] == [sys.executable, "launch/tpu_pod.py"]
    monkeypatch.chdir(REPO)
    parsed = tpu_pod.parse_args(words[2:])
    assert parsed.config == "configs/cifar10_pgd.py" and parsed.overrides == args
    (gpu,) = [t for t in templates if t.startswith("launch/gpu.sh")]
    assert reproduce.command(gpu, run, "w", args)[1:3] == ["configs/cifar10_pgd.py", "w"]
    assert reproduce.check_template("launch/gpu.sh {config} {workdir}").endswith(
        "it takes {config}, {workdir} and {args} (a word of its own); {python} if you like"
    )
    relative = reproduce.parse_args(["toy", "rel/out", "--", "--config.data_dir=data"])
    assert relative.out == os.path.abspath("rel/out")  # the commands run from the repository
    assert relative.overrides == [f"--config.data_dir={os.path.abspath('data')}"]


@pytest.mark.slow
def test_the_toy_set_trains_evaluates_reports_and_resumes(tmp_path):
    """The toy set through the script: its plan against the benchmark's FLOPs, then every run
    trained and evaluated, the report's frontier and IAAT point against each eval.json, and a
    rerun that skips what is done."""
    script = [str(REPO / "launch" / "reproduce.sh"), "toy", str(tmp_path)]
    env = dict(cli_env(), PYTHON=sys.executable)
    planned = subprocess.run(
        [*script, "--plan", "--json"], capture_output=True, text=True, env=env, check=True
    )
    rows = [json.loads(line) for line in planned.stdout.splitlines()]
    assert [row["run"] for row in rows] == ["iaat_seed0", "pgd_eps4_seed0", "pgd_eps8_seed0"]
    toy = reproduce.SETS["toy"].settings[1].overrides
    bench = subprocess.run(
        [sys.executable, "-m", "iaat_jax.benchmark", "--config=configs/cifar10.py", *toy]
        + ["--flops_only", "--methods=pgd"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    per_step = json.loads(bench.stdout.splitlines()[-1])["flops_per_step"]
    for row in rows[1:]:  # PGD-AT: one program, 3 steps
        assert row["train_flops"] == pytest.approx(3 * per_step)
        assert row["hours"] == pytest.approx(row["flops"] / (989e12 * 0.17) / 3600)

    first = subprocess.run(script, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    evals = {
        row["run"]: json.loads((tmp_path / row["run"] / "eval.json").read_text()) for row in rows
    }

    def point(found):  # (robust, clean) as the report reads them: the smoke suite at 8/255
        (suite,) = [r for r in found["autoattack"] if r["suite"] == "smoke"]
        return suite["robust_accuracy"], found["clean_accuracy"]

    drawn = json.loads((tmp_path / "report" / "pareto.json").read_text())
    by_method = {s["method"]: s for s in drawn["settings"]}
    assert (by_method["iaat"]["robust"], by_method["iaat"]["clean"]) == point(evals["iaat_seed0"])
    expected = frontier.pareto_front(
        [point(evals[n]) for n in ("pgd_eps4_seed0", "pgd_eps8_seed0")]
    )
    assert [(p["robust"], p["clean"]) for p in drawn["frontier"]] == expected
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## The paper's Table 1" in report and "![pareto](pareto.png)" in report

    again = subprocess.run(script, capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    lines = [line.split("] ", 1)[1] for line in again.stdout.splitlines() if "] " in line]
    assert lines[:3] == [
        f"{i}/3 {row['run']}: evaluated before: skipped" for i, row in enumerate(rows, 1)
    ]
