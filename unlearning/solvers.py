"""Matrix-free solvers of H x = b for the second-order update (H never formed).

- :func:`conjugate_gradient`: preconditioned CG on a symmetric positive definite operator,
  stopped on the relative residual ‖b − Hx‖₂/‖b‖₂.
- :func:`lissa`: the stochastic recursion of Koh & Liang (2017) as used by the code of
  Warnecke et al.: h_j = b + (1 − damping)·h_{j−1} − H h_{j−1}/scale, result h/scale, with the
  scale set from a power-iteration estimate of λ_max and divergence detected and repaired.
- Preconditioners for linear models: :func:`jacobi_preconditioner` (the diagonal of H) and
  :func:`block_preconditioner` (the per-class (d+1)×(d+1) diagonal blocks of a multinomial
  model's Hessian, each factorised by Cholesky); :func:`hutchinson_diagonal` estimates the
  diagonal of any Hessian from Hessian-vector products.

All vectors are flat parameter vectors (p,) in the architecture's layout; the operators are the
Hessian of the SUM objective L(θ; D) = Σ_z ℓ(z, θ) + (λ/2)‖θ‖², so eigenvalues grow like n.

Why not ``curvlinops-for-pytorch``: it is not installed in this environment (no pip installs
allowed), and the pieces needed here (an HVP closure, CG, a diagonal/block preconditioner) are a
few dozen lines on top of :meth:`Objective.hvp`; the GLM closed forms are faster than any
generic operator library for the convex models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .hessian import power_iteration

MatVec = Callable[[torch.Tensor], torch.Tensor]


def conjugate_gradient(
    matvec: MatVec,
    b: torch.Tensor,
    *,
    tol: float = 1e-10,
    max_iter: int | None = None,
    preconditioner: MatVec | None = None,
    x0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve A x = b for symmetric positive definite A given only v ↦ A v.

    b (p,). ``tol``: stop when ‖b − A x‖₂ ≤ tol·‖b‖₂ (relative residual). ``max_iter``: None →
    min(p, 1000). ``preconditioner``: r ↦ M⁻¹ r for an SPD M ≈ A (None: identity).
    The returned residual is recomputed from one extra product (not the recurrence).

    Returns (x, info) with info = {"iterations", "relative_residual", "converged",
    "negative_curvature"}; ``negative_curvature`` is True when a direction with pᵀAp ≤ 0 was
    met (A not positive definite, e.g. a non-convex model without enough damping): the
    iteration stops there and returns the current iterate.
    """
    p = b.shape[0]
    if max_iter is None:
        max_iter = max(1, min(p, 1000))
    bnorm = float(b.norm())
    if bnorm == 0.0:
        zero = torch.zeros_like(b)
        return zero, {
            "iterations": 0,
            "relative_residual": 0.0,
            "converged": True,
            "negative_curvature": False,
        }
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    z = preconditioner(r) if preconditioner is not None else r
    d = z.clone()
    rz = float(r.dot(z))
    it = 0
    negative = False
    hit = False
    for it in range(1, max_iter + 1):
        Ad = matvec(d)
        dAd = float(d.dot(Ad))
        if not dAd > 0.0 or not math.isfinite(dAd):
            negative = True
            it -= 1
            break
        alpha = rz / dAd
        x = x + alpha * d
        r = r - alpha * Ad
        if float(r.norm()) <= tol * bnorm:
            hit = True
            break
        z = preconditioner(r) if preconditioner is not None else r
        rz_new = float(r.dot(z))
        d = z + (rz_new / rz) * d
        rz = rz_new
    rel = float((b - matvec(x)).norm()) / bnorm
    return x, {
        "iterations": int(it),
        "relative_residual": rel,
        # The recomputed residual may exceed the recurrence's by rounding: accept 10× slack.
        "converged": bool(rel <= tol or (hit and rel <= 10.0 * tol)) and not negative,
        "negative_curvature": negative,
    }


def lissa(
    hvp: MatVec,
    b: torch.Tensor,
    *,
    scale: float | None = None,
    damping: float = 0.0,
    depth: int = 5000,
    repeats: int = 1,
    tol: float = 1e-6,
    safety: float = 1.5,
    max_retries: int = 6,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Approximate H⁻¹ b by the LiSSA recursion (Agarwal et al.; Koh & Liang's variant).

    h_0 = b, h_j = b + (1 − damping)·h_{j−1} − H h_{j−1}/scale; the result is h/scale. The fixed
    point is h/scale = (H + damping·scale·I)⁻¹ b, so ``damping`` here is Koh & Liang's
    *relative* damping; the unlearning update passes damping = 0 and an ``hvp`` that already
    includes its absolute damping μ. It converges when scale > λ_max(H)/2 (H PSD); the error
    of eigen-component μ shrinks by |1 − damping − μ/scale| per step.

    - ``hvp``: v ↦ H v. It may be stochastic (a minibatch estimate, scaled to the SUM objective
      by n/batch); then ``repeats`` > 1 averages independent runs. The stopping rule below
      assumes it is exact.
    - ``scale``: None → ``safety``·λ̂_max with λ̂_max from power iteration on ``hvp``.
    - ``tol``: each repeat stops once ‖h_j − h_{j−1}‖/‖b‖ ≤ tol; for damping = 0 this is exactly
      the relative residual ‖b − H (h/scale)‖/‖b‖ of the returned iterate.
    - Divergence: a non-finite iterate, or an increment ‖h_j − h_{j−1}‖ above 10·‖b‖ (for a
      convergent recursion the increments never exceed ‖b‖), stops the run; it is retried with
      the scale doubled, at most ``max_retries`` times.

    Returns (x, info) with info = {"iterations" (total steps, all tries), "relative_residual"
    (of the last repeat's increment, see ``tol``), "converged", "diverged" (a divergence was
    met at least once), "retries", "scale" (the scale finally used), "lambda_max_estimate"}.
    """
    p = b.shape[0]
    bnorm = float(b.norm())
    info: dict[str, Any] = {
        "iterations": 0,
        "relative_residual": 0.0,
        "converged": True,
        "diverged": False,
        "retries": 0,
        "scale": scale,
        "lambda_max_estimate": None,
    }
    if bnorm == 0.0:
        return torch.zeros_like(b), info
    if scale is None:
        lam = power_iteration(hvp, p, dtype=b.dtype, device=b.device, rtol=1e-4, seed=seed)
        info["lambda_max_estimate"] = lam
        scale = safety * max(lam, 1e-300)
    total_steps = 0
    for attempt in range(max_retries + 1):
        acc = torch.zeros_like(b)
        ok = True
        rel = float("inf")
        for _ in range(repeats):
            h = b.clone()
            rel = float("inf")
            for _ in range(depth):
                h_new = b + (1.0 - damping) * h - hvp(h) / scale
                total_steps += 1
                inc = float((h_new - h).norm())
                h = h_new
                if not math.isfinite(inc) or inc > 10.0 * bnorm:
                    ok = False
                    break
                rel = inc / bnorm
                if rel <= tol:
                    break
            if not ok:
                break
            acc += h / scale
        if ok:
            info.update(
                iterations=total_steps,
                relative_residual=rel,
                converged=rel <= tol,
                retries=attempt,
                scale=scale,
            )
            return acc / repeats, info
        info["diverged"] = True
        scale *= 2.0
    info.update(
        iterations=total_steps,
        relative_residual=float("inf"),
        converged=False,
        retries=max_retries,
        scale=scale / 2.0,
    )
    return torch.zeros_like(b), info


def hutchinson_diagonal(
    matvec: MatVec,
    p: int,
    *,
    samples: int = 32,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> torch.Tensor:
    """Estimate diag(A) (p,) as the mean of v ⊙ A v over Rademacher vectors v (unbiased)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    acc = torch.zeros(p, dtype=dtype, device=device)
    for _ in range(samples):
        v = (torch.randint(0, 2, (p,), generator=gen) * 2 - 1).to(dtype=dtype, device=device)
        acc += v * matvec(v)
    return acc / samples


def jacobi_preconditioner(diagonal: torch.Tensor, floor: float = 1e-12) -> MatVec:
    """r ↦ r / diag, with entries of ``diagonal`` clamped below at floor·max(diag) (keeps M SPD
    when a Hutchinson estimate has non-positive entries)."""
    dmax = float(diagonal.abs().max()) if diagonal.numel() else 1.0
    inv = 1.0 / diagonal.clamp_min(max(floor * dmax, 1e-300))
    return lambda r: r * inv


def block_inverses(blocks: torch.Tensor, factor_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Inverses (k, m, m) of SPD ``blocks`` (k, m, m) via Cholesky (cost ~k·m³).

    ``factor_dtype``: factorise in this precision (e.g. float32 for the mixed-precision CG:
    half the cost); if a block is not numerically positive definite there, all are factorised
    in float64 instead. A block estimate that is not positive definite even then (a sampled
    sum of signed parts can be indefinite) is inverted through its eigendecomposition with the
    eigenvalues clamped below at 1e-8 of the largest: a preconditioner must only be SPD.
    """
    L, info = torch.linalg.cholesky_ex(blocks.to(factor_dtype or blocks.dtype))
    if bool((info != 0).any()):
        L, info = torch.linalg.cholesky_ex(blocks.to(torch.float64))
    if not bool((info != 0).any()):
        return torch.cholesky_inverse(L)
    sym = 0.5 * (blocks + blocks.transpose(1, 2)).to(torch.float64)
    evals, evecs = torch.linalg.eigh(sym)
    top = evals.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    evals = torch.maximum(evals, 1e-8 * top)
    return (evecs / evals.unsqueeze(1)) @ evecs.transpose(1, 2)


def block_preconditioner(
    blocks: torch.Tensor,
    perm: torch.Tensor,
    flat_curvature: float | None = None,
    factor_dtype: torch.dtype | None = None,
) -> MatVec:
    """Block-diagonal preconditioner M = P blockdiag(B_1..B_k) Pᵀ.

    ``blocks`` (k, m, m) SPD; ``perm`` (k·m,) maps block coordinates to flat coordinates: the
    j-th coordinate of block a is flat index perm[a·m + j]. Each block is factorised and
    inverted once (:func:`block_inverses`); applying M⁻¹ costs k·m² per call (one batched
    product). ``flat_curvature`` as in :func:`block_inverse_preconditioner`.
    """
    return block_inverse_preconditioner(block_inverses(blocks, factor_dtype), perm, flat_curvature)


def block_inverse_preconditioner(
    inv: torch.Tensor, perm: torch.Tensor, flat_curvature: float | None = None
) -> MatVec:
    """r ↦ M⁻¹ r for M = P blockdiag(B_1..B_k) Pᵀ given the inverses ``inv`` (k, m, m) of B_a.

    ``flat_curvature`` c: for a soft-max model the *flat* subspace F = {1 ⊗ u} (the same change
    u of every class's weights) is an exact eigenspace of the Hessian with eigenvalue c = λ + μ
    (every C_i = diag p_i − p_i p_iᵀ annihilates 1), a direction the blocks over-estimate by
    orders of magnitude. With c given, M⁻¹ = Π_F / c + Π⊥ B⁻¹ Π⊥ (Π⊥ = I − Π_F; Π_F takes the
    mean over classes): still SPD, exact on F, and CG works on F⊥ alone. The products run in
    ``inv``'s precision; r keeps its own.
    """
    k, m, _ = inv.shape

    # Explicit inverses: each application is one batched matrix-vector product, where k small
    # triangular solves per CG iteration cost ~20 ms on two CPU threads (OpenMP overhead).
    def solve(rb: torch.Tensor) -> torch.Tensor:
        return torch.bmm(inv, rb.to(inv.dtype).unsqueeze(2)).squeeze(2).to(rb.dtype)

    def apply(r: torch.Tensor) -> torch.Tensor:
        rb = r[perm].reshape(k, m)
        if flat_curvature is not None:
            mean = rb.mean(0, keepdim=True)
            zb = solve(rb - mean)
            zb = zb - zb.mean(0, keepdim=True) + mean / flat_curvature
        else:
            zb = solve(rb)
        out = torch.empty_like(r)
        out[perm] = zb.reshape(-1)
        return out

    return apply


def kronecker_preconditioner(
    A: torch.Tensor, B: torch.Tensor, shift: float, perm: torch.Tensor
) -> MatVec:
    """M = P (A ⊗ B + shift·I) Pᵀ for SPD/PSD A (k, k), B (m, m), shift > 0 (K-FAC style).

    For a linear multinomial model A = (1/n) Σ_i (diag p_i − p_i p_iᵀ) and B = Σ_i x̃_i x̃_iᵀ,
    so A ⊗ B approximates the data Hessian, *including* the soft-max's flat direction (equal
    change of all classes, curvature only λ) that a per-class block preconditioner misses.
    ``perm`` as in :func:`block_preconditioner` (block a = class a, m = d + 1). Applied via the
    eigendecompositions of A and B: O(k³ + m³) once, O(k m (k + m)) per call.
    """
    k, m = A.shape[0], B.shape[0]
    la, Qa = torch.linalg.eigh(0.5 * (A + A.T))
    lb, Qb = torch.linalg.eigh(0.5 * (B + B.T))
    denom = la.clamp_min(0.0).unsqueeze(1) * lb.clamp_min(0.0).unsqueeze(0) + shift  # (k, m)

    def apply(r: torch.Tensor) -> torch.Tensor:
        R = r[perm].reshape(k, m)
        Z = Qa @ ((Qa.T @ R @ Qb) / denom) @ Qb.T
        out = torch.empty_like(r)
        out[perm] = Z.reshape(-1)
        return out

    return apply
