"""Certified removal (Guo et al., ICML 2020) for the convex binary models, SUM convention.

Training minimises L_b(θ; D) = Σ ℓ(z, θ) + (λ/2)‖θ‖² + bᵀθ with b ~ N(0, σ²I) drawn from a secret
seed. After an update θ' the gradient residual r = ‖∇L_b(θ'; D')‖₂ measures how far θ' is from
the exact optimum on the corrected data. With c = √(2 ln(1.5/δ)), the model stays
(ε, δ)-certified while the residuals accumulated since the last (re)training stay within the
lineage's budget σ·ε/c.

:func:`residual_bound` is a data-dependent upper bound on r for one Newton step, of the kind of
Guo et al.'s Corollary 1, in which every norm is either computed exactly or bounded from above
(never a power-iteration estimate, which approaches from below):

    ∇L_b(θ*+u; D') = Σ_i [ℓ'(m_i + a_i) − ℓ'(m_i) − ℓ''(m_i) a_i] x̃_i   (the Newton step cancels
    the linear terms), m_i = x̃_iᵀθ*, a_i = x̃_iᵀu, |·| ≤ (γ/2) a_i² with γ = sup|ℓ'''|, so

    r ≤ (γ/2) ‖X̃‖₂ ‖a‖₂ ‖a‖_∞,   ‖X̃‖₂ ≤ min(‖X̃‖_F, √‖X̃ᵀX̃‖_∞)   (X̃ = [X, 1], rows of D').

It holds for the exact second-order step; other updates are charged their exact residual.
The global constant γ = sup|ℓ'''| bounds the remainder too, but the interval-wise maximum is far
tighter for points far from the decision boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .model import TrainedModel

#: sup |ℓ'''| of the binary losses as functions of the margin, per unit of the logit scale:
#: logistic σ(1−σ)(1−2σ) peaks at 1/(6√3); the softplus-smoothed hinge with smoothing h has
#: the logistic shape scaled by 1/h² (ℓ = h·softplus((1−t)/h)).
LOGISTIC_GAMMA = 1.0 / (6.0 * math.sqrt(3.0))

#: Default capacity: how many typical single-record requests one budget should absorb when the
#: service chooses σ itself.
DEFAULT_CAPACITY = 100


def c_delta(delta: float) -> float:
    """c = √(2 ln(1.5/δ))."""
    return math.sqrt(2.0 * math.log(1.5 / delta))


def budget(epsilon: float, delta: float, sigma: float) -> float:
    """Residual budget of a lineage: σ·ε/c."""
    return sigma * epsilon / c_delta(delta)


def sigma_for(epsilon: float, delta: float, residual_per_request: float, capacity: int) -> float:
    """σ such that ``capacity`` requests of residual ``residual_per_request`` fit one budget."""
    return c_delta(delta) * capacity * residual_per_request / epsilon


def draw_noise(seed: int, p: int, sigma: float) -> torch.Tensor:
    """b ~ N(0, σ² I_p), float64 on the CPU, from a seeded generator."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return sigma * torch.randn(p, generator=gen, dtype=torch.float64)


def gamma(model: TrainedModel) -> float:
    """sup |ℓ'''| of the model's per-sample loss in the margin (binary models only)."""
    kind = model.architecture.get("kind")
    if model.n_classes != 2:
        raise ValueError("certified removal is implemented for binary models")
    if kind == "logistic_regression":
        return LOGISTIC_GAMMA
    if kind == "linear_svm":
        h = float(model.architecture.get("smoothing", 0.5))
        return LOGISTIC_GAMMA / (h * h)
    raise ValueError(f"certified removal needs a convex model, not '{kind}'")


def spectral_norm_upper(X: np.ndarray) -> float:
    """An upper bound of ‖X̃‖₂ for X̃ = [X, 1]: min(Frobenius, √(max row sum of |X̃ᵀX̃|))."""
    Xt = np.hstack([X, np.ones((X.shape[0], 1))])
    fro = float(np.linalg.norm(Xt))
    gram = Xt.T @ Xt
    return min(fro, math.sqrt(float(np.abs(gram).sum(axis=1).max())))


def _g(u: np.ndarray) -> np.ndarray:
    """|σ(u)(1−σ(u))(1−2σ(u))|: the logistic loss's third derivative in absolute value."""
    sg = 1.0 / (1.0 + np.exp(-u))
    return np.abs(sg * (1.0 - sg) * (1.0 - 2.0 * sg))


#: the maximisers ±ln(2+√3) of g, where g = 1/(6√3)
_U_STAR = math.log(2.0 + math.sqrt(3.0))


def sup_third_derivative(u_lo: np.ndarray, u_hi: np.ndarray) -> np.ndarray:
    """max of g over each interval [u_lo, u_hi] (endpoints, and ±u* when inside)."""
    out = np.maximum(_g(u_lo), _g(u_hi))
    inside = ((u_lo <= _U_STAR) & (u_hi >= _U_STAR)) | ((u_lo <= -_U_STAR) & (u_hi >= -_U_STAR))
    return np.where(inside, LOGISTIC_GAMMA, out)


@dataclass
class ResidualBound:
    bound: float
    x_norm_upper: float


def residual_bound(
    before: TrainedModel,
    after: TrainedModel,
    X_after: np.ndarray,
    y_after: np.ndarray,
    x_norm_upper: float | None = None,
) -> ResidualBound:
    """Upper bound on the Taylor remainder ‖∇L_b(θ*+u; D') − (∇L_b(θ*; D') + H u)‖₂ of one step
    u on the corrected data D' (= the gradient residual after an exact Newton step).

    Per point, with margin m_i = x̃_iᵀθ* and a_i = x̃_iᵀu, the remainder of ℓ' is ½ℓ‴(ξ_i)a_i²
    for some ξ_i between m_i and m_i + a_i; |ℓ‴| is maximised over that interval exactly (closed
    form), giving |c_i| ≤ ½ sup|ℓ‴|·a_i². Then ‖Σ c_i x̃_i‖ ≤ min(‖X̃‖₂^up ‖c‖₂, Σ|c_i|‖x̃_i‖₂),
    every norm exact or bounded above.
    """
    gamma(before)  # validates: binary convex model
    w0, w1 = before.params["weight"].numpy().ravel(), after.params["weight"].numpy().ravel()
    b0, b1 = float(before.params["bias"].numpy()[0]), float(after.params["bias"].numpy()[0])
    m = X_after @ w0 + b0
    a = X_after @ (w1 - w0) + (b1 - b0)
    lo, hi = np.minimum(m, m + a), np.maximum(m, m + a)
    if before.architecture.get("kind") == "linear_svm":
        h = float(before.architecture.get("smoothing", 0.5))
        sign = 2.0 * np.asarray(y_after, dtype=np.float64) - 1.0
        u1, u2 = (1.0 - sign * lo) / h, (1.0 - sign * hi) / h
        sup = sup_third_derivative(np.minimum(u1, u2), np.maximum(u1, u2)) / (h * h)
    else:
        sup = sup_third_derivative(lo, hi)
    c = 0.5 * sup * a * a
    xn = spectral_norm_upper(X_after) if x_norm_upper is None else x_norm_upper
    row_norms = np.sqrt((X_after * X_after).sum(axis=1) + 1.0)
    remainder = min(xn * float(np.linalg.norm(c)), float(np.abs(c) @ row_norms))
    return ResidualBound(remainder, xn)
