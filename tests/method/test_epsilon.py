"""The IAAT radius rule against the reference, case by case, and the host-side table."""

import numpy as np
import pytest

from iaat_jax.method import epsilon

GAMMA, BETA = 0.02, 0.1


def rule(eps_prev, clean, robust_prev, robust_high, eps_max=None):
    out = epsilon.adapted_radius(
        np.float32([eps_prev]),
        np.array([clean]),
        np.array([robust_prev]),
        np.array([robust_high]),
        gamma=GAMMA,
        beta=BETA,
        eps_max=eps_max,
    )
    return float(out[0])


def test_warmup_radius_is_epsilon_where_clean_correct_else_zero():
    out = epsilon.warmup_radius(np.array([True, False, True]), 8 / 255)
    np.testing.assert_allclose(out, [8 / 255, 0.0, 8 / 255])


@pytest.mark.parametrize(
    "clean, robust_prev, robust_high, eps_new",
    [
        (True, True, True, 0.05 + GAMMA),  # robust at the higher radius: grow
        (True, False, True, 0.05 + GAMMA),  # high decides even if the current probe failed
        (True, True, False, 0.05),  # robust only at the current radius: keep
        (True, False, False, 0.05 - GAMMA),  # robust at neither: shrink
        (False, True, True, 0.0),  # misclassified clean: target 0
    ],
)
def test_adapted_radius_matches_reference(clean, robust_prev, robust_high, eps_new):
    expected = BETA * eps_new + (1 - BETA) * 0.05
    assert rule(0.05, clean, robust_prev, robust_high) == pytest.approx(expected, abs=1e-7)


def test_adapted_radius_floors_the_target_at_zero():
    # eps_prev - gamma < 0: the target is clamped to 0 before smoothing
    assert rule(0.01, True, False, False) == pytest.approx((1 - BETA) * 0.01, abs=1e-8)


def test_misclassified_examples_decay_geometrically_to_zero():
    eps = np.float32([0.1])
    for _ in range(5):
        eps = epsilon.adapted_radius(
            eps, np.array([False]), np.array([True]), np.array([True]), gamma=GAMMA, beta=BETA
        )
    assert float(eps[0]) == pytest.approx(0.1 * (1 - BETA) ** 5, rel=1e-5)


def test_no_cap_by_default_and_optional_cap():
    assert rule(1.0, True, True, True) == pytest.approx(1.0 + BETA * GAMMA, abs=1e-6)
    assert rule(1.0, True, True, True, eps_max=0.5) == pytest.approx(0.5)


def test_rule_is_vectorised_over_the_batch():
    out = epsilon.adapted_radius(
        np.float32([0.05, 0.05, 0.05, 0.05]),
        np.array([True, True, True, False]),
        np.array([True, True, False, True]),
        np.array([True, False, False, True]),
        gamma=GAMMA,
        beta=BETA,
    )
    targets = np.array([0.05 + GAMMA, 0.05, 0.05 - GAMMA, 0.0])
    np.testing.assert_allclose(out, BETA * targets + (1 - BETA) * 0.05, rtol=1e-6)


def test_table_starts_at_zero_gathers_and_scatters_by_id(tmp_path):
    table = epsilon.EpsilonTable(10)
    np.testing.assert_array_equal(table.values, np.zeros(10, np.float32))
    table.scatter(np.array([7, 2]), np.float32([0.3, 0.1]))
    np.testing.assert_allclose(table.gather(np.array([2, 7, 0])), [0.1, 0.3, 0.0])
    table.save_npy(str(tmp_path / "table.npy"))
    saved = np.load(tmp_path / "table.npy")
    assert saved.dtype == np.float32 and saved.shape == (10,)
    np.testing.assert_array_equal(saved, table.values)


@pytest.mark.parametrize("bad_id", [-1, 10, 12345])
def test_table_rejects_ids_out_of_range(bad_id):
    table = epsilon.EpsilonTable(10)
    with pytest.raises(IndexError, match=r"outside \[0, 10\)"):
        table.gather(np.array([1, bad_id]))
    with pytest.raises(IndexError, match=r"outside \[0, 10\)"):
        table.scatter(np.array([bad_id]), np.float32([0.5]))
    np.testing.assert_array_equal(table.values, np.zeros(10, np.float32))


def test_table_rejects_values_of_another_size():
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        epsilon.EpsilonTable(10, np.zeros(12, np.float32))


def test_summary_reports_mean_and_percentiles():
    table = epsilon.EpsilonTable(101, np.arange(101, dtype=np.float32) / 100)
    stats = table.summary()
    assert stats["epsilon_mean"] == pytest.approx(0.5)
    assert stats["epsilon_p10"] == pytest.approx(0.1)
    assert stats["epsilon_p90"] == pytest.approx(0.9)
    assert stats["epsilon_max"] == pytest.approx(1.0)
    trained = table.summary(num_ids=51)  # a held-out tail (ids 51-100) is left out
    assert trained["epsilon_mean"] == pytest.approx(0.25) and trained["epsilon_max"] == 0.5
