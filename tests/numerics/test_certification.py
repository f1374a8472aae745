"""Certified removal: objective perturbation and the data-dependent residual bound, checked
against independent NumPy computations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from unlearning import TrainingOptions, UnlearnOptions, train, unlearn
from unlearning.certification import (
    budget,
    c_delta,
    draw_noise,
    residual_bound,
    sigma_for,
    spectral_norm_upper,
)


def data() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y


def numpy_gradient(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float, b: np.ndarray
) -> np.ndarray:
    """∇(Σ log-loss + λ/2‖θ‖² + bᵀθ) for θ = [w, bias], written out independently."""
    Xt = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-Xt @ theta))
    return Xt.T @ (p - y) + l2 * theta + b


def flat(model) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate(
        [model.params["weight"].numpy().ravel(), model.params["bias"].numpy().ravel()]
    )


def test_budget_arithmetic():
    assert c_delta(1e-5) == pytest.approx(np.sqrt(2 * np.log(1.5e5)))
    assert budget(1.0, 1e-5, 2.0) == pytest.approx(2.0 / c_delta(1e-5))
    s = sigma_for(0.5, 1e-4, 1e-3, 100)
    assert budget(0.5, 1e-4, s) == pytest.approx(100 * 1e-3)


def test_noise_is_reproducible_from_the_seed_and_has_scale_sigma():
    b1, b2 = draw_noise(123, 10_000, 3.0), draw_noise(123, 10_000, 3.0)
    assert np.array_equal(b1.numpy(), b2.numpy())
    assert float(b1.std()) == pytest.approx(3.0, rel=0.05)
    assert not np.array_equal(b1.numpy(), draw_noise(124, 10_000, 3.0).numpy())


def test_training_with_objective_perturbation_reaches_the_perturbed_optimum():
    X, y = data()
    b = draw_noise(7, X.shape[1] + 1, 5.0)
    model, metrics = train(
        {"kind": "logistic_regression"}, X, y, 2, TrainingOptions(l2=10.0), noise=b
    )
    g = numpy_gradient(flat(model), X, y, 10.0, b.numpy())
    assert np.linalg.norm(g) < 1e-6
    assert metrics["grad_norm"] == pytest.approx(np.linalg.norm(g), abs=1e-8)
    plain, _ = train({"kind": "logistic_regression"}, X, y, 2, TrainingOptions(l2=10.0))
    assert np.linalg.norm(flat(model) - flat(plain)) > 1e-3  # the noise moved the optimum


def test_spectral_norm_upper_bound_is_an_upper_bound():
    X, _ = data()
    Xt = np.hstack([X, np.ones((len(X), 1))])
    assert spectral_norm_upper(X) >= np.linalg.norm(Xt, 2)


@pytest.mark.parametrize("n_deleted", [1, 5, 20])
def test_bound_dominates_the_exact_residual_of_the_newton_step(n_deleted):
    X, y = data()
    b = draw_noise(3, X.shape[1] + 1, 1.0)
    model, _ = train({"kind": "logistic_regression"}, X, y, 2, TrainingOptions(l2=10.0), noise=b)
    rng = np.random.default_rng(n_deleted)
    for _ in range(3):
        rows = rng.choice(len(y), n_deleted, replace=False)
        keep = np.setdiff1d(np.arange(len(y)), rows)
        res = unlearn(
            model,
            X[keep],
            y[keep],
            X[rows],
            y[rows],
            X[:0],
            y[:0],
            UnlearnOptions(method="second_order", solver="exact"),
        )
        exact = np.linalg.norm(numpy_gradient(flat(res.model), X[keep], y[keep], 10.0, b.numpy()))
        assert res.metrics["gradient_residual"] == pytest.approx(exact, rel=1e-6, abs=1e-9)
        bound = residual_bound(model, res.model, X[keep], y[keep]).bound
        assert exact <= bound + 1e-8  # plus the training residual (~1e-10·n) carried along
        assert bound < 20 * exact + 1e-6  # and not vacuous
