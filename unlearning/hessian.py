"""Dense Hessians of the SUM objective, Cholesky solves and the largest-eigenvalue estimate."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import hessian as func_hessian

from .architectures import unflatten
from .objective import BATCH_SIZE, Objective

#: Above this many parameters a dense (p, p) Hessian is not formed.
MAX_DENSE_PARAMS = 10_000


def dense_hessian(
    obj: Objective,
    theta: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    closed_form: bool = True,
) -> torch.Tensor:
    """∇²L(θ; D) (p, p), symmetric, including λI.

    Uses the architecture's closed form when it has one (``closed_form=True``), otherwise
    ``torch.func.hessian`` of the batched data term.
    """
    p = theta.shape[0]
    if p > MAX_DENSE_PARAMS:
        raise ValueError(
            f"model has {p} parameters; a dense Hessian is limited to {MAX_DENSE_PARAMS}"
        )
    theta = theta.detach()
    H = None
    if closed_form:
        H = obj.spec.data_hessian(obj.architecture, unflatten(theta, obj.shapes), X, y)
    if H is None:
        H = torch.zeros(p, p, dtype=theta.dtype, device=theta.device)
        for s in range(0, X.shape[0], BATCH_SIZE):
            Xb, yb = X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE]
            H += func_hessian(lambda t, Xb=Xb, yb=yb: obj.data_loss(t, Xb, yb))(theta)
    H = 0.5 * (H + H.T)
    H.diagonal().add_(obj.l2)
    return H


def cholesky(H: torch.Tensor, max_tries: int = 8) -> tuple[torch.Tensor, float]:
    """Lower Cholesky factor of H; if H is not numerically positive definite, add damping
    μI with μ = 1e-10·max|diag H|, ×100 per retry. Returns (L, μ) with μ = 0.0 normally."""
    mu = 0.0
    scale = float(H.diagonal().abs().max()) if H.numel() else 1.0
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    for attempt in range(max_tries + 1):
        L, info = torch.linalg.cholesky_ex(H + mu * eye if mu else H)
        if int(info) == 0:
            return L, mu
        mu = 1e-10 * max(scale, 1e-300) * (100.0**attempt)
    raise ValueError("Hessian is not positive definite even after damping")


def cholesky_solve(L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x = H⁻¹ b for H = L Lᵀ; b of shape (p,)."""
    return torch.cholesky_solve(b.unsqueeze(1), L).squeeze(1)


def power_iteration(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    p: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    max_iter: int = 200,
    rtol: float = 1e-6,
    seed: int = 0,
) -> float:
    """Largest eigenvalue of a symmetric PSD operator v ↦ A v on R^p by power iteration.

    Starts from a seeded Gaussian vector; stops when the Rayleigh quotient changes by less than
    ``rtol`` relatively. For PSD A the Rayleigh quotient approaches λ_max from below, so callers
    that need an upper bound multiply by a safety factor.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(p, generator=gen, dtype=dtype).to(device)
    v /= v.norm()
    lam = 0.0
    for _ in range(max_iter):
        hv = matvec(v)
        new = float(v.dot(hv))
        nrm = hv.norm()
        if float(nrm) == 0.0 or not torch.isfinite(nrm):
            return new
        v = hv / nrm
        if abs(new - lam) <= rtol * abs(new):
            return new
        lam = new
    return lam


def largest_eigenvalue(
    obj: Objective,
    theta: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    max_iter: int = 200,
    rtol: float = 1e-6,
    seed: int = 0,
) -> float:
    """λ_max of ∇²L(θ; D) by :func:`power_iteration` on Hessian-vector products."""
    theta = theta.detach()
    return power_iteration(
        lambda v: obj.hvp(theta, X, y, v),
        theta.shape[0],
        dtype=theta.dtype,
        device=theta.device,
        max_iter=max_iter,
        rtol=rtol,
        seed=seed,
    )
