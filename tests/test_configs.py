"""Every config loads, validates, and says in its docstring how to run it and what it costs."""

import pathlib

import pytest
from conftest import REPO, load_config

from iaat_jax.run import config_checks

CONFIGS = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


def test_the_paper_configs_exist():
    assert {"default", "cifar10", "cifar10_pgd", "cifar100", "imagenet"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_validates_and_documents_itself(name):
    config = load_config(name)
    for device_count in (1, 2, 4) if name == "default" else (1, 8):  # default: a CPU's batch
        config_checks.validate_config(config, device_count)
    doc = pathlib.Path(REPO / "configs" / f"{name}.py").read_text().split('"""')[1]
    assert f"--config=configs/{name}.py" in doc
    assert "Cost" in doc


def test_paper_hyper_parameters():
    cifar = load_config("cifar10")
    assert (cifar.model, cifar.method, cifar.num_epochs, cifar.batch_size) == (
        "wrn32_10_iaat",
        "iaat",
        110,
        256,
    )
    assert cifar.epsilon == pytest.approx(8 / 255) and cifar.iaat_gamma == pytest.approx(1.9 / 255)
    assert (cifar.iaat_beta, cifar.iaat_warmup_epochs, tuple(cifar.lr_boundaries)) == (
        0.1,
        10,
        (70, 90, 100),
    )
    baseline = load_config("cifar10_pgd")
    assert (baseline.method, baseline.num_epochs, tuple(baseline.lr_boundaries)) == (
        "pgd",
        200,
        (60, 120, 160),
    )
    assert load_config("cifar100").dataset == "cifar100"
    imagenet = load_config("imagenet")
    assert (imagenet.dataset, imagenet.model) == ("imagenet2012", "resnet50")
