"""The benchmark: one JSON record per method with the promised fields, and FLOPs that count
every unrolled attack step."""

import json
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import REPO, cli_env, load_config

from iaat_jax import benchmark
from iaat_jax.run import experiment, sharding

FIELDS = {
    "method": str,
    "model": str,
    "global_batch": int,
    "device_kind": str,
    "device_count": int,
    "compile_seconds": float,
    "seconds_per_step": float,
    "images_per_second": float,
    "host_fraction": float,
    "host_seconds_per_step": dict,
    "flops_per_step": float,
    "collectives_per_step": int,
    "compiled_collectives": dict,
    "bytes_to_device_per_step": int,
}


def tiny_config():
    config = load_config()
    config.update(batch_size=16, attack_steps=1, fake_data=True, iaat_warmup_epochs=1)
    return config


def run_benchmark(*args):
    """python -m iaat_jax.benchmark ARGS with one CPU device."""
    env = cli_env()
    return subprocess.run(
        [sys.executable, "-m", "iaat_jax.benchmark", "--config=configs/default.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_record_per_method_with_every_field():
    result = run_benchmark(
        "--config.batch_size=16",
        "--config.attack_steps=1",
        "--methods=clean,iaat",
        "--steps=2",
        "--warmup_steps=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["method"] for r in records] == ["clean", "iaat"]
    for record in records:
        for name, kind in FIELDS.items():
            assert isinstance(record[name], kind), name
        assert record["device_count"] == 1 and record["global_batch"] == 16
        assert record["images_per_second"] == pytest.approx(16 / record["seconds_per_step"])
        assert 0 < record["host_fraction"] < 1 and record["mfu"] is None  # CPU: no peak
        assert set(record["host_seconds_per_step"]) == {"gather", "transfer", "scatter"}
    # IAAT after warm-up runs three attacks and PGD none: many times the clean step's FLOPs
    assert records[1]["flops_per_step"] > 3 * records[0]["flops_per_step"]


def test_bad_input_is_one_line_and_exit_2():
    result = run_benchmark("--methods=pgd,madry")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown method 'madry'")
    result = run_benchmark("--config.beta=0", "--methods=iaat")  # IAAT's beta, by its old name
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: config.iaat_beta=0.0 must be in (0, 1]"


class Linear(nn.Module):
    """Logits = flattened image @ W: the FLOPs of a pass are 2 * B * D * C, exactly."""

    num_classes: int

    @nn.compact
    def __call__(self, images, train: bool):
        del train
        flat = images.reshape(images.shape[0], -1)
        return nn.Dense(self.num_classes, use_bias=False)(flat)


@pytest.mark.parametrize("num_devices", [1, 8])
def test_flops_count_every_attack_step_on_a_linear_model(num_devices):
    config = tiny_config()
    config.method = "pgd"
    batch, pixels, classes = 16, 28 * 28, 1000
    model = Linear(classes)
    mesh = sharding.make_mesh(jax.devices()[:num_devices])
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(model, config, (28, 28, 1), jax.random.key(0), schedule)
    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.random((batch, 28, 28, 1), dtype=np.float32),
        "label": rng.integers(0, classes, batch).astype(np.int32),
        "id": np.arange(batch),
    }
    args = (
        sharding.replicate(state, mesh),
        sharding.device_batch(host_batch, mesh),
        sharding.shard_rows(np.full(batch, 0.1, np.float32), mesh),
        sharding.replicate(jax.random.key(1), mesh),
    )
    flops = {}
    for steps in (1, 3):
        config.attack_steps = steps
        flops[steps] = benchmark.step_cost(model, config, mesh, args)["flops_per_step"]
    # one PGD step: a forward pass and the gradient with respect to the input, 2 * 2 * B * D * C,
    # plus elementwise work (softmax, sign, projection) of well under 1% at these sizes
    per_step = (flops[3] - flops[1]) / 2
    matmuls = 4 * batch * pixels * classes
    assert matmuls <= per_step <= 1.01 * matmuls


def linear_step_args(model, config, mesh, classes: int, batch: int = 16):
    schedule = experiment.learning_rate_schedule(config, 10)
    state = experiment.create_train_state(model, config, (28, 28, 1), jax.random.key(0), schedule)
    rng = np.random.default_rng(0)
    host_batch = {
        "image": rng.integers(0, 256, (batch, 28, 28, 1), dtype=np.uint8),
        "label": rng.integers(0, classes, batch).astype(np.int32),
        "id": np.arange(batch),
    }
    return (
        sharding.replicate(state, mesh),
        sharding.device_batch(host_batch, mesh),
        sharding.shard_rows(np.full(batch, 0.1, np.float32), mesh),
        sharding.replicate(jax.random.key(1), mesh),
    )


def test_probe_steps_cut_the_iaat_step_by_the_probe_steps_they_drop():
    config = tiny_config()
    config.update(method="iaat", attack_steps=3)
    batch, pixels, classes = 16, 28 * 28, 1000
    model, mesh = Linear(classes), sharding.make_mesh(jax.devices()[:1])
    args = linear_step_args(model, config, mesh, classes, batch)
    flops = {}
    for probe_steps in (None, 3, 1):
        config.probe_steps = probe_steps
        flops[probe_steps] = benchmark.step_cost(model, config, mesh, args, epoch=5)[
            "flops_per_step"
        ]
    assert flops[3] == flops[None]  # probes of attack_steps steps: the full rule
    # two probes of 2 fewer PGD steps each: 4 steps of a forward and an input gradient dropped
    dropped = (flops[3] - flops[1]) / 4
    matmuls = 4 * batch * pixels * classes
    assert matmuls <= dropped <= 1.01 * matmuls


def test_local_batchnorm_issues_no_collective_in_the_attack_passes():
    """Collectives of the IAAT step on 8 devices as its attacks grow from 1 to 3 PGD steps:
    'global' averages statistics in every attack pass, 'running' and 'local' in none."""
    config = tiny_config()
    config.update(method="iaat", batch_size=16)
    model = experiment.create_model(config, 10)
    mesh = sharding.make_mesh(jax.devices()[:8])
    args = linear_step_args(model, config, mesh, 10)
    counts = {}
    for policy in ("running", "global", "local"):
        for steps in (1, 3):
            config.update(attack_batchnorm=policy, attack_batchnorm_updates=policy != "running")
            config.attack_steps = steps
            cost = benchmark.step_cost(model, config, mesh, args, epoch=5)
            counts[policy, steps] = cost["collectives_per_step"]
    assert counts["running", 1] == counts["running", 3] > 0  # the gradients and training pass
    assert counts["local", 1] == counts["local", 3]
    # each of the 3 attacks has 2 more steps, each a forward and a backward pass over 3 layers
    assert counts["global", 3] - counts["global", 1] >= 3 * 2 * 3 * 2


def test_the_checkpoint_benchmark_times_both_modes_of_real_saves(tmp_path):
    config = load_config()
    record = benchmark.benchmark_checkpoint(config, str(tmp_path), saves=1)
    assert record["what"] == "checkpoint" and record["table_megabytes"] == pytest.approx(
        4000 * 4 / 2**20, abs=0.05
    )
    for name in ("async_blocked", "async_committed", "sync_blocked"):
        assert record[f"{name}_seconds"] > 0, name
    assert record["async_blocked_seconds"] <= record["async_committed_seconds"]
    # what it timed were whole checkpoints: the newest restores, beside the exported table
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]
    assert np.load(tmp_path / "epsilon_table.npy").shape == (4000,)


def test_attack_passes_time_both_forms_of_a_model_that_has_two():
    """--attack_passes: a record per form (the model's own, the attacks'), each with both rates;
    a model without a faster form gets its own form only."""
    small = run_benchmark("--attack_passes", "--config.eval_batch_size=8")
    assert small.returncode == 0, small.stderr[-3000:]
    records = [json.loads(line) for line in small.stdout.splitlines()]
    on_cpu = jax.default_backend() == "cpu"  # the subprocess's backend too
    assert [r["form"] for r in records] == (["model", "attacks"] if on_cpu else ["model"])
    for record in records:
        assert record["batch"] == 8 and record["model"] == "small_cnn"
        assert record["forward_examples_per_second"] > 0
        assert record["input_gradient_examples_per_second"] > 0
    wrn = run_benchmark(
        "--attack_passes",
        "--config.eval_batch_size=2",
        "--config.model=wrn8_1_iaat",
        "--config.dataset=cifar10",
    )
    assert wrn.returncode == 0, wrn.stderr[-3000:]
    assert [json.loads(line)["form"] for line in wrn.stdout.splitlines()] == ["model"]
