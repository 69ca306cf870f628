"""The study sets of launch/reproduce.sh: each a list of training settings, their seeds, the
evaluation every run gets and the report's radius. A new study is one entry of SETS."""

import dataclasses


def _radius(pixels: float) -> str:
    """A radius in /255 units as an exact-enough override value."""
    return f"{pixels / 255:.10g}"


def _radii(pixels: tuple[float, ...]) -> str:
    return "(" + ",".join(_radius(p) for p in pixels) + ",)"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One training setting: its directory stem, config file and overrides."""

    name: str
    config: str
    overrides: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ConfigSet:
    """The settings of a study, its seeds, how each run is evaluated and reported."""

    what: str
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    evaluation: tuple[str, ...]  # --mode=evaluate's overrides, the same for every run
    test_epsilon: float  # the Pareto plot's and the table's AutoAttack radius

    @property
    def evaluation_suite(self) -> str | None:
        """The suite the evaluation runs: the report's robust accuracy."""
        prefix = "--config.eval_suite="
        return next((o[len(prefix) :] for o in self.evaluation if o.startswith(prefix)), None)


# PGD-AT's radii on the frontier, in /255. The paper's Figure 3 draws fixed-radius PGD-AT models
# against IAAT; its radii could not be read here (no copy of the paper's text, and the
# authors' code has one radius, 8/255, in configs/train.json), so these span IAAT's point on
# both sides: smaller radii give more clean and less robust accuracy, 10/255 the other way.
CIFAR10_RADII = (2, 4, 6, 8, 10)
CIFAR10_TEST_RADII = (0, 2, 4, 6, 8, 10, 12, 14, 16)  # the PGD sweep (Figure 4), /255

SETS = {
    "cifar10": ConfigSet(
        what="CIFAR-10 (WRN-32-10, the authors' step): IAAT, PGD-AT at "
        f"{', '.join(map(str, CIFAR10_RADII))}/255, TRADES, clean training",
        settings=(
            Setting("iaat", "configs/cifar10.py"),
            *(
                Setting(
                    f"pgd_eps{r}", "configs/cifar10_pgd.py", (f"--config.epsilon={_radius(r)}",)
                )
                for r in CIFAR10_RADII
            ),
            Setting("trades", "configs/cifar10_trades.py"),
            Setting("clean", "configs/cifar10_pgd.py", ("--config.method=clean",)),
        ),
        seeds=(0,),
        evaluation=(
            f"--config.sweep_epsilons={_radii(CIFAR10_TEST_RADII)}",
            "--config.sweep_attack_steps=20",
            "--config.eval_suite=autoattack",
            f"--config.eval_suite_epsilons={_radii((8,))}",
        ),
        test_epsilon=8 / 255,
    ),
    "methods_mnist5k": ConfigSet(
        what="every adversarial method on the embedded digits (MNIST-5k, the default config, "
        "7 epochs): a smoke of the methods, not a study",
        settings=tuple(
            Setting(method, "configs/default.py", (f"--config.method={method}",))
            for method in ("pgd", "trades", "mart", "iaat", "iaat_trades", "iaat_mart")
        ),
        seeds=(0,),
        evaluation=(
            "--config.sweep_epsilons=(0.3,)",
            "--config.eval_suite=apgd",
            "--config.eval_suite_epsilons=(0.3,)",
        ),
        test_epsilon=0.3,
    ),
    "toy": ConfigSet(
        what="toy size (the test's): fake CIFAR-shaped data, WRN-8-1, 3 steps a run",
        settings=tuple(
            Setting(
                name,
                "configs/cifar10.py",
                (
                    *extra,
                    "--config.fake_data=True",
                    "--config.model=wrn8_1_iaat",
                    "--config.half_precision=False",
                    "--config.batch_size=8",
                    "--config.eval_batch_size=8",
                    "--config.num_train_steps=3",
                    "--config.iaat_warmup_epochs=0",
                    "--config.attack_steps=2",
                    "--config.eval_attack_steps=2",
                    "--config.log_every_steps=1",
                    "--config.attack_unroll=False",  # compiles faster; 3 steps need no speed
                ),
            )
            for name, extra in (
                ("iaat", ()),
                ("pgd_eps4", ("--config.method=pgd", f"--config.epsilon={_radius(4)}")),
                ("pgd_eps8", ("--config.method=pgd",)),
            )
        ),
        seeds=(0,),
        evaluation=(
            f"--config.sweep_epsilons={_radii((0, 8))}",
            "--config.sweep_attack_steps=2",
            "--config.eval_suite=smoke",
            f"--config.eval_suite_epsilons={_radii((8,))}",
        ),
        test_epsilon=8 / 255,
    ),
}
