"""Privacy-budget accounting of certified lineages (convex binary models).

The secret of a lineage is a random 63-bit seed stored as its own artifact (with a random salt,
so that its content address reveals nothing); b ~ N(0, σ²I) is re-drawn from it when needed.
The seed never leaves the store: not in an API response, a log line or the audit trail.

Accounting (PRODUCT.md section 1, Guo et al. 2020): a lineage's budget is σ·ε/c,
c = √(2 ln(1.5/δ)); it is charged the training's final gradient norm, then for every request
the data-dependent bound of its exact second-order step (:func:`unlearning.certification.
residual_bound`, plus the linear solve's own residual), or — for any other update — the exact
residual after it. The sum of charges bounds the current gradient residual; the exact residual
is checked against it. When a request's charge would exceed what is left, the service retrains
from scratch on the corrected data with a fresh seed and starts a new budget.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import numpy as np

from unlearning import TrainedModel, TrainingOptions, UnlearnOptions, train, unlearn
from unlearning.certification import (
    DEFAULT_CAPACITY,
    budget,
    c_delta,
    draw_noise,
    residual_bound,
    sigma_for,
    spectral_norm_upper,
)

BOUND_NAME = "data-dependent Newton-step bound (Guo et al. 2020, Cor. 1 kind), norms bounded above"
TYPICAL_SAMPLES = 5


def new_seed() -> tuple[int, bytes]:
    """A fresh secret seed and the artifact that stores it."""
    seed = secrets.randbits(63)
    return seed, json.dumps({"seed": seed, "salt": secrets.token_hex(16)}).encode()


def read_seed(artifact: bytes) -> int:
    return int(json.loads(artifact)["seed"])


def noise_for(model: TrainedModel, seed: int, sigma: float):  # type: ignore[no-untyped-def]
    p = sum(int(t.numel()) for t in model.params.values())
    return draw_noise(seed, p, sigma)


def choose_sigma(
    architecture: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    options: TrainingOptions,
    epsilon: float,
    delta: float,
    capacity: int,
) -> tuple[float, dict[str, Any]]:
    """σ from the data: train without noise, bound the residual of deleting each of
    ``TYPICAL_SAMPLES`` random single records with the exact second-order step, take the
    largest as the typical charge r̂, and set σ so that ``capacity`` such requests fit:
    σ = c·capacity·r̂/ε."""
    base, _ = train(architecture, X, y, 2, options)
    rng = np.random.default_rng(0)
    xn = spectral_norm_upper(X)
    charges = []
    for i in rng.choice(len(y), size=min(TYPICAL_SAMPLES, len(y) - 1), replace=False):
        keep = np.ones(len(y), dtype=bool)
        keep[i] = False
        res = unlearn(
            base,
            X[keep],
            y[keep],
            X[i : i + 1],
            y[i : i + 1],
            X[:0],
            y[:0],
            UnlearnOptions(method="second_order", solver="exact"),
        )
        charges.append(request_charge(base, res.model, X[keep], y[keep], res.metrics, xn)[0])
    r_hat = max(charges)
    sigma = sigma_for(epsilon, delta, r_hat, capacity)
    return sigma, {
        "sigma_source": "chosen",
        "capacity": capacity,
        "typical_request_charge": r_hat,
        "rule": "σ = c·capacity·r̂/ε, r̂ = largest bound of 5 random one-record "
        "deletions on a noise-free fit",
    }


def request_charge(
    before: TrainedModel,
    after: TrainedModel,
    X_after: np.ndarray,
    y_after: np.ndarray,
    metrics: dict[str, Any],
    x_norm_upper: float | None = None,
) -> tuple[float, str]:
    """What a request costs the budget, and how it was bounded."""
    exact_newton = metrics.get("solver") == "cholesky" and metrics.get("chunks", 1) == 1
    if exact_newton and metrics.get("step_size", 1.0) == 1.0:
        rb = residual_bound(before, after, X_after, y_after, x_norm_upper)
        linear = float(metrics.get("relative_residual") or 0.0) * float(
            metrics.get("delta_norm") or 0.0
        )
        return rb.bound + linear, "newton-step bound"
    return float(metrics["gradient_residual"]), "exact residual (not an exact Newton step)"


def initial_certificate(
    cfg: dict[str, Any],
    sigma: float,
    sigma_info: dict[str, Any],
    train_grad_norm: float,
    lineage: int,
    reason: str,
) -> dict[str, Any]:
    total = budget(cfg["epsilon"], cfg["delta"], sigma)
    return {
        "certified": train_grad_norm <= total,
        "epsilon": cfg["epsilon"],
        "delta": cfg["delta"],
        "sigma": sigma,
        **sigma_info,
        "c": c_delta(cfg["delta"]),
        "budget": total,
        "budget_used": train_grad_norm,
        "budget_left": total - train_grad_norm,
        "training_residual": train_grad_norm,
        "residuals": [],
        "bound": BOUND_NAME,
        "lineage": lineage,
        "lineage_started_by": reason,
    }


def charged(
    cert: dict[str, Any], request_id: str, residual: float, charge: float, how: str
) -> dict[str, Any] | None:
    """The certificate after charging one request, or None when the budget cannot pay it (or
    the exact residual exceeds the accumulated charges, which would void the bound)."""
    used = cert["budget_used"] + charge
    if used > cert["budget"] or residual > used:
        return None
    return {
        **cert,
        "budget_used": used,
        "budget_left": cert["budget"] - used,
        "residuals": [
            *cert["residuals"],
            {"request_id": request_id, "residual": residual, "charge": charge, "charged_as": how},
        ],
        "certified": True,
    }


__all__ = [
    "DEFAULT_CAPACITY",
    "charged",
    "choose_sigma",
    "initial_certificate",
    "new_seed",
    "noise_for",
    "read_seed",
    "request_charge",
]
