"""FAB-T: its projection is the linear programme's optimum, and on a linear model it finds the
closed-form smallest L-inf perturbation to each target."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from iaat_jax.attacks import fab


def smallest_step_by_linear_programme(point, normal, offset):
    """min t s.t. |d_i| <= t, 0 <= point + d <= 1, normal . (point + d) = offset; None if
    the box cannot reach the hyperplane. Variables (d, t)."""
    n = len(point)
    cost = np.r_[np.zeros(n), 1.0]
    bounds_rows = np.block([[np.eye(n), -np.ones((n, 1))], [-np.eye(n), -np.ones((n, 1))]])
    result = linprog(
        cost,
        A_ub=bounds_rows,
        b_ub=np.zeros(2 * n),
        A_eq=np.r_[normal, 0.0][None],
        b_eq=[offset - normal @ point],
        bounds=[(-p, 1 - p) for p in point] + [(0, None)],
    )
    return result.x[-1] if result.status == 0 else None


def test_the_projection_is_the_smallest_linf_step_onto_the_hyperplane_in_the_box():
    rng = np.random.default_rng(0)
    batch, n = 48, 12
    points = rng.random((batch, n)).astype(np.float32)
    normals = rng.normal(size=(batch, n)).astype(np.float32)
    normals[:, :3] *= rng.random((batch, 1)) < 0.3  # some coordinates that do not count
    # residuals from tiny to beyond what the box allows
    offsets = (np.sum(normals * points, 1) + rng.normal(size=batch) * 3).astype(np.float32)
    steps = np.asarray(fab.project_onto_hyperplane(*map(jnp.asarray, (points, normals, offsets))))
    moved = points + steps
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    infeasible = 0
    for i in range(batch):
        best = smallest_step_by_linear_programme(points[i], normals[i], offsets[i])
        if best is None:  # the corner that comes closest: every counting coordinate at a face
            infeasible += 1
            gaps = np.abs(np.stack([moved[i], points[i]]) @ normals[i] - offsets[i])
            assert gaps[0] <= gaps[1]
            counting = normals[i] != 0
            at_face = np.minimum(moved[i], 1 - moved[i])[counting]
            np.testing.assert_allclose(at_face, 0, atol=1e-6)
            continue
        assert np.abs(steps[i]).max() == pytest.approx(best, rel=1e-4, abs=1e-6)
        assert normals[i] @ moved[i] == pytest.approx(offsets[i], abs=1e-3)
    assert 0 < infeasible < batch  # both cases were exercised


class LinearModel:
    """logits = x W + b on flattened images; a closed form for every distance."""

    def __init__(self, rng, pixels, classes):
        self.weights = rng.normal(size=(pixels, classes)).astype(np.float32)
        self.bias = (rng.normal(size=classes) * 0.1).astype(np.float32)

    def __call__(self, images):
        return images.reshape(images.shape[0], -1) @ self.weights + self.bias

    def distance(self, images, labels, targets):
        """Smallest L-inf perturbation making z_t >= z_y (no box): margin / ||w_y - w_t||_1."""
        logits = np.asarray(self(images))
        rows = np.arange(len(labels))
        gap = logits[rows, labels] - logits[rows, targets]
        return gap / np.abs(self.weights[:, labels] - self.weights[:, targets]).sum(0)


def test_fab_t_reaches_the_closed_form_distance_to_each_target_on_a_linear_model():
    rng = np.random.default_rng(1)
    batch, side, classes = 64, 6, 4
    model = LinearModel(rng, side * side, classes)
    # images in the middle of the box, so the closest points are never clipped
    images = (0.5 + 0.02 * rng.normal(size=(batch, side, side, 1))).astype(np.float32)
    labels = np.argmax(np.asarray(model(images)), -1)
    ranked = np.argsort(-np.asarray(model(images)), axis=1)
    closest = np.min([model.distance(images, labels, ranked[:, r]) for r in (1, 2, 3)], 0)
    assert closest.max() < 0.4  # the closest points stay inside the box
    for rank in (1, 2, 3):
        targets = ranked[:, rank]
        adversarial, distance = fab.fab_targeted(
            model, jnp.asarray(images), jnp.asarray(labels), jnp.asarray(targets), 100
        )
        distance, adversarial = np.asarray(distance), np.asarray(adversarial)
        expected = model.distance(images, labels, targets)
        # within 1% of the target's own closed form, and never closer than the true minimum
        assert np.all(distance <= 1.01 * expected)
        assert np.all(distance >= closest * (1 - 1e-5))
        assert np.all(np.argmax(np.asarray(model(adversarial)), -1) != labels)
        np.testing.assert_allclose(
            np.abs(adversarial - images).reshape(batch, -1).max(1), distance, rtol=1e-5
        )
