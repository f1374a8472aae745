"""Shared helpers for the unlearning tests (independent NumPy reference formulas)."""

from __future__ import annotations

import numpy as np

from unlearning import TrainedModel


def theta_of(model: TrainedModel) -> np.ndarray:
    """Flat parameters in the documented layout [weight (row-major), bias]."""
    return np.concatenate(
        [model.params["weight"].numpy().ravel(), model.params["bias"].numpy().ravel()]
    )


def numpy_gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray, k: int, lam: float):
    """∇ of Σ ℓ + (λ/2)‖θ‖² for (binary | multinomial) logistic regression, closed form."""
    d = X.shape[1]
    ko = 1 if k == 2 else k
    W = theta[: ko * d].reshape(ko, d)
    b = theta[ko * d :]
    Z = X @ W.T + b
    if ko == 1:
        R = (1.0 / (1.0 + np.exp(-Z[:, 0])) - y)[:, None]
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        R = P - np.eye(k)[y]
    gW = R.T @ X
    gb = R.sum(0)
    return np.concatenate([gW.ravel(), gb]) + lam * theta


def sum_objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray, k: int, lam: float) -> float:
    """Σ ℓ + (λ/2)‖θ‖² in NumPy (for finite differences)."""
    n, d = X.shape
    ko = 1 if k == 2 else k
    W = theta[: ko * d].reshape(ko, d)
    Z = X @ W.T + theta[ko * d :]
    if ko == 1:
        z = Z[:, 0]
        loss = np.logaddexp(0.0, z) - y * z
    else:
        m = Z.max(1)
        loss = m + np.log(np.exp(Z - m[:, None]).sum(1)) - Z[np.arange(n), y]
    return float(loss.sum() + 0.5 * lam * theta @ theta)
