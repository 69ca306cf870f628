"""The paper's Figure 3 claim as numbers: the fixed-radius (PGD-AT) frontier of clean against
robust accuracy, and whether each adaptive setting lies beyond it. figures.py draws this; the
report quotes its verdicts; pareto.json holds it."""

import dataclasses

import numpy as np

from iaat_jax.analysis.runs import Run, group_by_setting, label_with_seeds, measure_name


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (robust, clean) points that no other point beats on both axes, by robustness."""
    return sorted(
        p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)
    )


def frontier_gap(pgd_points: list[tuple[float, float]], robust: float, clean: float) -> float:
    """Clean accuracy above the fixed-radius frontier at the same robust accuracy.

    The frontier joins the non-dominated PGD runs' (robust, clean) points in order of
    robustness; beyond its ends it is flat at the nearest point (a point more robust than every
    PGD run is compared with the most robust one). Positive: beyond the frontier.
    """
    robust_values, clean_values = zip(*pareto_front(pgd_points), strict=True)
    return clean - float(np.interp(robust, robust_values, clean_values))


@dataclasses.dataclass(frozen=True)
class SettingPoint:
    """A setting's mean (robust, clean) accuracy over its seeds that have both, with their sd."""

    runs: list[Run]
    label: str  # runs.label_with_seeds
    robust: float
    clean: float
    robust_sd: float
    clean_sd: float


def setting_point(
    group: list[Run], label: str, test_epsilon: float, suite: str | None
) -> SettingPoint | None:
    """The setting's point, or None where no seed has both accuracies."""
    points = [(r.robust_accuracy(test_epsilon, suite), r.clean_accuracy()) for r in group]
    points = [p for p in points if None not in p]
    if not points:
        return None
    robust, clean = np.array(points).T
    spread = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return SettingPoint(
        group, label, float(robust.mean()), float(clean.mean()), spread(robust), spread(clean)
    )


@dataclasses.dataclass(frozen=True)
class Frontier:
    """Every setting's point, the frontier of the fixed-radius ones, a verdict per adaptive
    setting, and a warning for each run or figure left without what it needs."""

    test_epsilon: float
    suite: str | None
    points: list[SettingPoint]
    front: list[tuple[float, float]]  # (robust, clean), by robustness
    verdicts: list[str]
    warnings: list[str]

    def to_json(self) -> dict:
        """pareto.json: the numbers pareto.png draws."""
        return {
            "test_epsilon": self.test_epsilon,
            "measure": measure_name(self.suite),
            "settings": [
                {
                    "label": p.label,
                    "method": p.runs[0].method,
                    "runs": [run.name for run in p.runs],
                    "robust": p.robust,
                    "clean": p.clean,
                    "robust_sd": p.robust_sd,
                    "clean_sd": p.clean_sd,
                }
                for p in self.points
            ],
            "frontier": [{"robust": robust, "clean": clean} for robust, clean in self.front],
            "verdicts": self.verdicts,
        }


def frontier(runs: list[Run], test_epsilon: float, suite: str | None = None) -> Frontier:
    """The frontier at `test_epsilon` measured by `suite` (None: the worst case), and whether
    each adaptive setting is beyond it: by how much clean accuracy, and whether that is within
    the seeds' spread (the setting's clean sd plus the largest of the frontier's)."""
    groups, points, warnings = group_by_setting(runs), [], []
    for group in groups:
        missing = [
            r.name for r in group if r.sweep and r.robust_accuracy(test_epsilon, suite) is None
        ]
        if missing:
            warnings.append(
                f"pareto.png: {', '.join(missing)} lack {measure_name(suite)} at eps "
                f"{test_epsilon:.4g}: left out"
            )
        point = setting_point(group, label_with_seeds(group, groups), test_epsilon, suite)
        if point is not None:
            points.append(point)
    fixed = [(p.robust, p.clean) for p in points if p.runs[0].frontier]
    adaptive = [p for p in points if p.runs[0].adaptive and not p.runs[0].frontier]
    verdicts = []
    if fixed:
        fixed_clean_sd = max(p.clean_sd for p in points if p.runs[0].frontier)
        for p in adaptive:
            gap = frontier_gap(fixed, p.robust, p.clean)
            where = "beyond" if gap > 0 else "not beyond"
            spread = (
                f" (sd {p.clean_sd:.3f} / {p.robust_sd:.3f})" if p.robust_sd or p.clean_sd else ""
            )
            noise = p.clean_sd + fixed_clean_sd  # seeds' spread of the two clean accuracies
            within = ", within the seeds' spread" if noise and abs(gap) <= noise else ""
            verdicts.append(
                f"{p.label}: clean {p.clean:.3f}, robust {p.robust:.3f}{spread} at eps "
                f"{test_epsilon:.4g} -> {where} the fixed-eps frontier ({gap:+.3f} clean "
                f"accuracy{within})"
            )
    elif adaptive:
        warnings.append("pareto.png: no evaluated PGD-AT run, so no frontier is drawn")
    return Frontier(test_epsilon, suite, points, pareto_front(fixed), verdicts, warnings)
