"""Unlearning updates (Warnecke et al., NDSS 2023) on the SUM objective.

L(θ; D) = Σ_{z∈D} ℓ(z, θ) + (λ/2)‖θ‖². Δ(Z, Z̃) = Σ_{Z̃} ∇ℓ(z̃, θ*) − Σ_Z ∇ℓ(z, θ*).
First order: θ* − τΔ. Second order: θ* − (H + μI)⁻¹Δ with H = ∇²L(θ*; D'), solved by
``exact`` (dense Hessian + Cholesky, or a cached factorisation + Woodbury), ``cg`` or ``lissa``
(see :mod:`unlearning.solvers`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .architectures import flatten, unflatten
from .factorization import (
    Factorization,
    augment,
    curvature_blocks,
    flat_perm,
    glm_diagonal,
    is_linear,
    linear_dims,
    logit_curvature,
    low_rank_factor,
    sampled_curvature_blocks,
    version_tensors,
)
from .hessian import cholesky, cholesky_solve, dense_hessian, power_iteration
from .model import TrainedModel, resolve_device, to_tensors
from .objective import Objective
from .options import UnlearnOptions
from .solvers import (
    block_inverse_preconditioner,
    block_inverses,
    block_preconditioner,
    conjugate_gradient,
    hutchinson_diagonal,
    jacobi_preconditioner,
    kronecker_preconditioner,
    lissa,
)

#: Rows per class of the importance-sampled block preconditioner, used when the data have more
#: rows than this (it only has to approximate H: the CG stopping rule uses exact products).
BLOCK_PRECOND_ROWS = 1024
#: Rows per class of the cached block preconditioner (built after a version commits).
CACHED_BLOCK_ROWS = 4 * BLOCK_PRECOND_ROWS
#: Rows (uniform subsample) of the Kronecker-factored preconditioner.
KRONECKER_ROWS = 4096
#: Row chunk of the closed-form linear-model Hessian-vector product.
HVP_CHUNK_ROWS = 4096
#: Mixed-precision CG: inner relative tolerance, cap on refinement steps, and the data size
#: (entries of X) from which ``cg_precision="auto"`` uses it.
MIXED_INNER_TOL = 1e-5
MIXED_MAX_OUTER = 8
MIXED_MIN_ELEMENTS = 10_000_000
#: Rows per forward pass when computing head features: small enough that a batch's activations
#: stay in cache (a CNN's feature pass over 10,000 images: 0.20 s at 64–512 rows, 0.55 s at 2,048).
FEATURE_BATCH = 256
#: ... on a GPU, where large batches amortise the kernel launches (the H200 check used 2,048).
FEATURE_BATCH_CUDA = 2048
#: Largest block preconditioner, in entries k·(d+1)² (400 MB in float64): beyond it (e.g. a
#: bag-of-words model with 10⁵ features) the Jacobi preconditioner is used and nothing cached.
MAX_BLOCK_ENTRIES = 50_000_000


@dataclass
class UpdateResult:
    """The updated model, the method used and its evidence (``metrics``)."""

    model: TrainedModel
    method: str
    metrics: dict


@dataclass
class _Data:
    """A signed multiset of points: Σ_z over ``base`` plus Σ sign·(rows of each extra part).

    Represents the intermediate data sets of a chunked update, D' + Z_rest − Z̃_rest, without
    materialising them. The regulariser is counted once.
    """

    X: torch.Tensor
    y: torch.Tensor
    extra: list[tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=list)
    #: weight of the base rows in Hessian-vector products (n/r for an r-row subsample)
    scale: float = 1.0

    def parts(self) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
        return [(self.X, self.y, 1.0), *[e for e in self.extra if e[0].shape[0]]]

    def gradient(self, obj: Objective, theta: torch.Tensor) -> torch.Tensor:
        g = obj.gradient(theta, self.X, self.y)
        for X, y, s in self.extra:
            if X.shape[0]:
                g = g + s * obj.grad_sum(theta, X, y)
        return g

    def value(self, obj: Objective, theta: torch.Tensor) -> float:
        f = float(obj.value(theta, self.X, self.y))
        for X, y, s in self.extra:
            if X.shape[0]:
                f += s * float(obj.data_loss(theta, X, y))
        return f

    def hvp(self, obj: Objective, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = obj.hvp(theta, self.X, self.y, v)
        if self.scale != 1.0:
            out = self.scale * (out - obj.l2 * v) + obj.l2 * v
        for X, y, s in self.extra:
            if X.shape[0]:
                out = out + s * (obj.hvp(theta, X, y, v) - obj.l2 * v)
        return out

    def curvatures(self, obj: Objective, theta: torch.Tensor) -> list[torch.Tensor]:
        """The logit curvatures C_i (n_part, k, k) of every part of :meth:`parts` at θ."""
        return [logit_curvature(obj, theta, X, y) for X, y, _ in self.parts()]

    def weights(self) -> list[float]:
        """The weight of each part of :meth:`parts` in the data Hessian (sign · scale)."""
        return [s * (self.scale if i == 0 else 1.0) for i, (_, _, s) in enumerate(self.parts())]

    def linear_hvp(
        self,
        obj: Objective,
        theta: torch.Tensor,
        dtype: torch.dtype | None = None,
        curvatures: list[torch.Tensor] | None = None,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The same operator as :meth:`hvp` for a linear model, in closed form.

        The per-sample logit curvatures C_i (k, k) are computed once; each product then costs
        two (n, d)·(d, k) matrix products: Z = X Vᵀ + 1 v_bᵀ, U_i = C_i z_i, H v = [Uᵀ X, Σ U]
        (+ λ v), instead of a double backward pass. ``dtype``: compute in this precision (a
        copy of X; the mixed-precision CG uses float32 for its inner iterations).
        ``curvatures``: those of :meth:`curvatures`, when the caller already has them.
        """
        k, d = linear_dims(obj)
        if curvatures is None:
            curvatures = self.curvatures(obj, theta)
        parts = []
        for (X, _, _), weight, C in zip(self.parts(), self.weights(), curvatures, strict=True):
            if dtype is not None:
                X, C = X.to(dtype), C.to(dtype)
            parts.append((X, C, weight))

        def apply(v: torch.Tensor) -> torch.Tensor:
            if dtype is not None:
                v = v.to(dtype)
            Vw, vb = v[: k * d].reshape(k, d), v[k * d :]
            gw = torch.zeros_like(Vw)
            gb = torch.zeros_like(vb)
            for X, C, w in parts:
                # Row chunks small enough that X_c is still in cache for the second product.
                for s in range(0, X.shape[0], HVP_CHUNK_ROWS):
                    Xc = X[s : s + HVP_CHUNK_ROWS]
                    U = torch.einsum("nab,nb->na", C[s : s + HVP_CHUNK_ROWS], Xc @ Vw.T + vb)
                    gw += w * (U.T @ Xc)
                    gb += w * U.sum(0)
            return torch.cat([gw.reshape(-1), gb]) + obj.l2 * v

        return apply

    def dense_hessian(self, obj: Objective, theta: torch.Tensor) -> torch.Tensor:
        H = dense_hessian(obj, theta, self.X, self.y)
        eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
        for X, y, s in self.extra:
            if X.shape[0]:
                H = H + s * (dense_hessian(obj, theta, X, y) - obj.l2 * eye)
        return H


def layer_subset(shapes: dict[str, tuple[int, ...]], last_k: int | None) -> list[str]:
    """Parameter names of the last ``last_k`` layers (all names when None).

    A layer is the prefix before the final "." of a name ("fc2.weight" → "fc2"; names without
    "." share the layer ""), in the order of first appearance in ``shapes``.
    """
    names = list(shapes)
    if last_k is None:
        return names
    layers: list[str] = []
    for n in names:
        prefix = n.rsplit(".", 1)[0] if "." in n else ""
        if prefix not in layers:
            layers.append(prefix)
    chosen = set(layers[-last_k:])
    return [n for n in names if (n.rsplit(".", 1)[0] if "." in n else "") in chosen]


def _subset_index(shapes: dict[str, tuple[int, ...]], names: list[str]) -> torch.Tensor:
    idx, offset = [], 0
    for n, shape in shapes.items():
        size = math.prod(shape)
        if n in names:
            idx.append(torch.arange(offset, offset + size))
        offset += size
    return torch.cat(idx)


def _split(n: int, n_chunks: int) -> list[tuple[int, int]]:
    bounds = np.linspace(0, n, n_chunks + 1).round().astype(int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(n_chunks)]


class _Step:
    """One update at θ on data ``data`` for the change (Z → Z̃), restricted to index set S."""

    def __init__(
        self,
        obj: Objective,
        theta: torch.Tensor,
        data: _Data,
        S: torch.Tensor | None,
        options: UnlearnOptions,
    ) -> None:
        self.obj, self.theta, self.data, self.S, self.options = obj, theta, data, S, options
        self.p = theta.shape[0]
        self.q = self.p if S is None else int(S.shape[0])
        self.hess_data = data
        rows = options.hessian_rows
        if rows is not None and data.X.shape[0] > rows:
            gen = torch.Generator(device="cpu").manual_seed(0)
            pick = torch.randperm(data.X.shape[0], generator=gen)[:rows].to(data.X.device)
            self.hess_data = _Data(
                data.X[pick], data.y[pick], data.extra, scale=data.X.shape[0] / rows
            )
        #: closed-form data-Hessian product of a linear model (curvatures cached at θ)
        #: closed-form products of a linear model, built on first use (the cached-Woodbury and
        #: fixed-τ paths never multiply by H)
        self._linear_hvp: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._linear_hvp32: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._curvatures: list[torch.Tensor] | None = None

    def curvatures(self) -> list[torch.Tensor]:
        """Logit curvatures of the Hessian data's parts at θ (linear models; computed once and
        shared by the float64 and float32 products and the preconditioner)."""
        if self._curvatures is None:
            self._curvatures = self.hess_data.curvatures(self.obj, self.theta)
        return self._curvatures

    def mixed_precision(self) -> bool:
        """Whether CG runs in mixed precision (float32 inner iterations, float64 residuals).

        ``cg_precision`` "mixed" needs a float64 linear model without subset; "auto" picks it
        there when the data are large (≥ ``MIXED_MIN_ELEMENTS`` entries: the products are
        memory-bound, and float32 halves the traffic).
        """
        choice = self.options.cg_precision
        able = is_linear(self.obj) and self.S is None and self.theta.dtype == torch.float64
        if choice == "double" or not able:
            return False
        if choice == "mixed":
            return True
        return sum(X.numel() for X, _, _ in self.hess_data.parts()) >= MIXED_MIN_ELEMENTS

    def hvp32(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The float32 operator v ↦ (H + μI) v of a linear model (built on first use)."""
        if self._linear_hvp32 is None:
            self._linear_hvp32 = self.hess_data.linear_hvp(
                self.obj, self.theta, torch.float32, self.curvatures()
            )
        op, mu = self._linear_hvp32, self.options.damping
        return lambda v: op(v) + mu * v

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """(H_SS + μI) v for v (q,) (on the Hessian subsample when ``hessian_rows`` is set)."""
        mu = self.options.damping
        if self._linear_hvp is None and is_linear(self.obj):
            self._linear_hvp = self.hess_data.linear_hvp(
                self.obj, self.theta, curvatures=self.curvatures()
            )
        op = self._linear_hvp or (lambda u: self.hess_data.hvp(self.obj, self.theta, u))
        if self.S is None:
            return op(v) + mu * v
        full = torch.zeros_like(self.theta)
        full[self.S] = v
        return op(full)[self.S] + mu * v

    def dense(self) -> torch.Tensor:
        """Dense H_SS (+ μI) (q, q): closed form for the full set, HVP columns otherwise."""
        if self.S is None:
            H = self.data.dense_hessian(self.obj, self.theta)
            if self.options.damping:
                H.diagonal().add_(self.options.damping)
            return H
        eye = torch.eye(self.q, dtype=self.theta.dtype, device=self.theta.device)
        H = torch.stack([self.hvp(e) for e in eye], dim=1)  # μ already in the products
        return 0.5 * (H + H.T)

    def curvature_blocks(self, metrics: dict[str, Any], rows: int | None = None) -> torch.Tensor:
        """Per-class diagonal blocks of the data Hessian (k, d+1, d+1) of a linear model.

        Exact for parts of at most ``rows`` rows (None: ``BLOCK_PRECOND_ROWS``), an
        importance-sampled estimate (:func:`sampled_curvature_blocks`, ``rows`` rows per class)
        beyond.
        """
        rows = BLOCK_PRECOND_ROWS if rows is None else rows
        blocks: torch.Tensor | None = None
        parts = self.hess_data.parts()
        for (X, _, _), w, C in zip(parts, self.hess_data.weights(), self.curvatures(), strict=True):
            cd = torch.diagonal(C, dim1=1, dim2=2)
            if X.shape[0] > rows:
                part = sampled_curvature_blocks(X, cd, rows)
                metrics.update(preconditioner_rows=rows, preconditioner_sampling="importance")
            else:
                part = curvature_blocks(X, cd)
            blocks = w * part if blocks is None else blocks + w * part
        assert blocks is not None  # parts() always holds the base rows
        return blocks

    def preconditioner(self, metrics: dict[str, Any], cached: Factorization | None = None):
        """M⁻¹ as a function (or None) for the chosen ``preconditioner``; fills ``metrics``.

        ``cached``: a matching "block_inverse" factorisation of this version, used instead of
        building the blocks when the block preconditioner is chosen.
        """
        choice = self.options.preconditioner
        linear = is_linear(self.obj) and self.S is None
        if choice == "auto":
            multiclass = linear and linear_dims(self.obj)[0] > 1
            choice = ("block" if multiclass else "jacobi") if linear else "none"
        if choice in ("block", "kronecker") and not linear:
            metrics["preconditioner_note"] = f"{choice} needs a linear model; used jacobi"
            choice = "jacobi"
        if choice == "block" and not block_fits(self.obj):
            metrics["preconditioner_note"] = (
                f"class blocks above {MAX_BLOCK_ENTRIES:,} entries; used jacobi"
            )
            choice = "jacobi"
        metrics["preconditioner"] = choice
        mu, l2 = self.options.damping, self.obj.l2
        if choice == "none":
            return None
        if choice == "jacobi":
            if linear:
                diag = torch.stack(
                    [s * glm_diagonal(self.obj, self.theta, X, y) for X, y, s in self.data.parts()]
                ).sum(0)
                diag = diag + (l2 + mu)
                metrics["preconditioner_diagonal"] = "closed_form"
            else:
                diag = hutchinson_diagonal(
                    self.hvp, self.q, dtype=self.theta.dtype, device=self.theta.device
                )
                metrics["preconditioner_diagonal"] = "hutchinson_32"
            return jacobi_preconditioner(diag)
        k, d = linear_dims(self.obj)
        perm = flat_perm(k, d, self.theta.device)
        softmax = self.obj.spec.kind == "logistic_regression" and k > 1
        flat = (l2 + mu) if softmax else None
        if choice == "block" and softmax:
            metrics["preconditioner_flat_subspace"] = True
        if choice == "block" and cached is not None and cached.kind == "block_inverse":
            metrics["preconditioner_source"] = "cached"
            inv = cached.L.to(self.theta.device)
            return block_inverse_preconditioner(inv, perm, flat)
        if choice == "kronecker":
            # base rows uniformly subsampled beyond KRONECKER_ROWS (scaled by n/rows)
            X, y = self.data.X, self.data.y
            factor = 1.0
            rows = KRONECKER_ROWS
            if X.shape[0] > rows:
                gen = torch.Generator(device="cpu").manual_seed(0)
                pick = torch.randperm(X.shape[0], generator=gen)[:rows].to(X.device)
                factor = X.shape[0] / rows
                X, y = X[pick], y[pick]
                metrics["preconditioner_rows"] = rows
            C = logit_curvature(self.obj, self.theta, X, y)
            A = C.mean(0)
            Xt = augment(X)
            B = factor * (Xt.T @ Xt)
            for Xe, _, s in self.data.extra:
                if Xe.shape[0]:
                    Xte = augment(Xe)
                    B = B + s * (Xte.T @ Xte)
            return kronecker_preconditioner(A, B, l2 + mu, perm)
        blocks = self.curvature_blocks(metrics)
        blocks = blocks + (l2 + mu) * torch.eye(
            blocks.shape[1], dtype=blocks.dtype, device=blocks.device
        )
        metrics["preconditioner_source"] = "built"
        # The mixed-precision CG applies M in float32 anyway: factorise it there (half the cost).
        dtype = torch.float32 if self.mixed_precision() else None
        return block_preconditioner(blocks, perm, flat, dtype)


def block_fits(obj: Objective) -> bool:
    """Whether the per-class blocks of a linear model, k·(d+1)² entries, stay within
    ``MAX_BLOCK_ENTRIES``."""
    k, d = linear_dims(obj)
    return k * (d + 1) ** 2 <= MAX_BLOCK_ENTRIES


def block_cache_refusal(model: TrainedModel) -> str | None:
    """Why no block preconditioner is cached for ``model`` (None: one is): it needs a
    multiclass linear model whose blocks fit ``MAX_BLOCK_ENTRIES``."""
    obj = Objective.for_model(model)
    if not is_linear(obj) or linear_dims(obj)[0] < 2:
        return "a block preconditioner needs a multiclass linear model"
    if not block_fits(obj):
        return f"the class blocks would exceed {MAX_BLOCK_ENTRIES:,} entries"
    return None


def build_block_factorization(
    model: TrainedModel,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    device: str = "cpu",
) -> Factorization:
    """The CG block preconditioner of a multiclass linear model, to cache per version.

    X (n, d), y (n,): the version's training data D. Returns a :class:`Factorization` of kind
    "block_inverse": the inverses (k, d+1, d+1) (float32; float64 where a block needs it,
    :func:`block_inverses`) of the per-class diagonal blocks of
    H(θ*; D) + λI: exact up to ``CACHED_BLOCK_ROWS`` rows, an importance-sampled estimate from
    that many rows per class beyond (off the request path, so 4× a request's sample). A
    preconditioner only steers CG (its stopping rule uses exact products), so the cache serves
    every request on this version whatever its change set.
    Raises ValueError for other models (:func:`block_cache_refusal`).
    """
    why = block_cache_refusal(model)
    if why is not None:
        raise ValueError(why)
    obj = Objective.for_model(model)
    Xt, yt, theta = version_tensors(model, obj, X, y, device)
    step = _Step(obj, theta, _Data(Xt, yt), None, UnlearnOptions())
    blocks = step.curvature_blocks({}, CACHED_BLOCK_ROWS)
    blocks = blocks + obj.l2 * torch.eye(blocks.shape[1], dtype=theta.dtype, device=theta.device)
    inv = block_inverses(blocks, torch.float32)
    return Factorization.of_version(model, obj, inv, theta, int(Xt.shape[0]), kind="block_inverse")


def _second_order(
    step: _Step,
    b: torch.Tensor,
    options: UnlearnOptions,
    metrics: dict[str, Any],
    factorization: Factorization | None,
    woodbury: tuple[torch.Tensor, torch.Tensor] | None,
) -> torch.Tensor:
    """x ≈ (H_SS + μI)⁻¹ b by the chosen solver; fills ``metrics``."""
    solver = options.solver
    if solver == "auto":
        solver = "exact" if step.q <= options.exact_max_params else "cg"
    metrics["solver_requested"] = options.solver
    t0 = time.perf_counter()
    if solver == "exact":
        if step.q > options.exact_max_params:
            raise ValueError(
                f"solver 'exact' needs a dense Hessian of {step.q} parameters, above "
                f"exact_max_params={options.exact_max_params}; use 'cg' or 'lissa'"
            )
        if factorization is not None and woodbury is not None:
            x = factorization.woodbury_solve(b, *woodbury)
            mu = factorization.damping
            metrics.update(
                factorization="cached-woodbury",
                woodbury_rank=int(woodbury[0].shape[1] + woodbury[1].shape[1]),
            )
        else:
            L, mu = cholesky(step.dense())
            x = cholesky_solve(L, b)
            metrics["factorization"] = "rebuilt"
        metrics.update(solver="cholesky", iterations=1, damping=options.damping + mu)
        metrics["solve_time_s"] = time.perf_counter() - t0
        rel = float((b - step.hvp(x) - mu * x).norm()) / max(float(b.norm()), 1e-300)
        metrics.update(relative_residual=rel, converged=bool(rel <= 1e-6))
        return x
    if solver == "cg":
        M = step.preconditioner(metrics, factorization)
        max_iter = options.cg_max_iter or max(1, min(step.q, 1000))
        if step.mixed_precision():
            x, info = _mixed_cg(step, b, options.cg_tol, max_iter, M)
        else:
            x, info = conjugate_gradient(
                step.hvp, b, tol=options.cg_tol, max_iter=max_iter, preconditioner=M
            )
            info["precision"] = str(b.dtype).replace("torch.", "")
        metrics.update(solver="cg", damping=options.damping, **info)
    else:
        x, info = lissa(
            step.hvp,
            b,
            scale=options.lissa_scale,
            depth=options.lissa_depth,
            repeats=options.lissa_repeats,
            tol=options.lissa_tol,
        )
        metrics.update(
            solver="lissa",
            damping=options.damping,
            **{("lissa_" + k if k in ("scale", "retries") else k): v for k, v in info.items()},
        )
    metrics["solve_time_s"] = time.perf_counter() - t0
    return x


def _mixed_cg(
    step: _Step,
    b: torch.Tensor,
    tol: float,
    max_iter: int,
    M: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(H + μI) x = b by iterative refinement: float64 residuals, float32 inner PCG.

    Each outer step computes r = b − (H + μI)x with the float64 operator, solves
    (H + μI) d ≈ r by preconditioned CG in float32 to ``MIXED_INNER_TOL`` relative (half the
    memory traffic per product: the products of a large linear model are memory-bound), and
    adds d. The stopping rule and the reported residual are those of the float64 operator, so
    the result meets ``tol`` exactly as plain CG would. ``max_iter`` caps each inner solve (at
    most ``MIXED_MAX_OUTER`` of them); ``iterations`` reports their sum.
    """
    x = torch.zeros_like(b)
    r = b.clone()
    bnorm = max(float(b.norm()), 1e-300)
    op32 = step.hvp32()
    M32 = None if M is None else (lambda v: M(v.to(b.dtype)).to(torch.float32))
    iters, outer, negative, rel = 0, 0, False, 1.0
    while outer < MIXED_MAX_OUTER:
        outer += 1
        inner_tol = max(MIXED_INNER_TOL, tol * bnorm / max(float(r.norm()), 1e-300))
        d, info = conjugate_gradient(
            op32,
            r.to(torch.float32),
            tol=inner_tol,
            max_iter=max_iter,
            preconditioner=M32,
        )
        iters += int(info["iterations"])
        negative = negative or bool(info["negative_curvature"])
        x = x + d.to(b.dtype)
        r = b - step.hvp(x)
        rel = float(r.norm()) / bnorm
        if rel <= tol or negative:
            break
    return x, {
        "iterations": iters,
        "relative_residual": rel,
        "converged": bool(rel <= tol) and not negative,
        "negative_curvature": negative,
        "precision": "mixed",
        "outer_iterations": outer,
    }


def unlearn(
    model: TrainedModel,
    X_after: np.ndarray,
    y_after: np.ndarray,
    Z_X: np.ndarray,
    Z_y: np.ndarray,
    Zt_X: np.ndarray,
    Zt_y: np.ndarray,
    options: UnlearnOptions,
    *,
    factorization: Factorization | None = None,
) -> UpdateResult:
    """Move θ* as if the model had been trained on the corrected data D'.

    X_after (n', d), y_after (n',): the whole corrected training set D'. Z_X (m, d), Z_y (m,):
    the affected points as they are now; Zt_X, Zt_y: the same points after correction (shape
    (0, d) / (0,) for a deletion). Δ = Σ_{Z̃} ∇ℓ(z̃, θ*) − Σ_Z ∇ℓ(z, θ*) from per-sample gradients
    (torch.func grad + vmap, in batches).

    - second order: θ' = θ* − (H + μI)⁻¹Δ, H = ∇²L(θ*; D'), μ = ``options.damping``, solved by
      ``options.solver`` (see :class:`UnlearnOptions`);
    - first order: θ' = θ* − τΔ (τ from ``options`` or 1/λ̂_max of H + μI);
    - ``last_k_layers`` restricts Δ, H and the step to a parameter subset; ``chunk_size``
      applies the change in consecutive chunks, each a full update at the current θ on the data
      with the previous chunks applied (D' + Z_rest − Z̃_rest, never materialised).
    - ``factorization``: a cached :class:`Factorization` of this version (H on the *current*
      data D = D' + Z − Z̃ at θ*). Used for an exact linear-model solve with a Woodbury
      correction H_D' = H_D − U_Z U_Zᵀ + U_Z̃ U_Z̃ᵀ when solver resolves to exact, no subset,
      one chunk and μ = 0; otherwise the Hessian is rebuilt and ``factorization_note`` says why.
      A "block_inverse" factorisation (:func:`build_block_factorization`) serves as the CG block
      preconditioner instead of building it (``preconditioner_source`` "cached").

    metrics: ``update_norm`` ‖θ' − θ*‖₂, ``gradient_residual`` ‖∇L(θ'; D')‖₂ (w.r.t. all
    parameters), ``gradient_residual_subset`` (w.r.t. the updated subset, with
    ``last_k_layers``), ``gradient_residual_before`` ‖∇L(θ*; D')‖₂, ``delta_norm`` ‖Δ‖₂,
    ``wall_time_s``, ``solver`` ("cholesky" | "cg" | "lissa" | "none"), ``solver_requested``,
    ``iterations``, ``relative_residual`` ‖b − (H + μI)x‖/‖b‖, ``converged``, ``damping`` (μ plus
    any Cholesky safeguard), ``factorization`` ("cached-woodbury" | "rebuilt", exact only),
    ``preconditioner`` and ``preconditioner_source`` ("built" | "cached") (cg),
    ``solve_time_s``, ``tau`` and ``tau_source`` ("power_iteration" | "option", first order),
    ``step_size`` (1.0 unless ``line_search``), ``n_affected`` =
    max(|Z|, |Z̃|), ``chunks``, ``n_updated_params``, ``last_k_layers``. With chunks the solver
    figures are those of the last chunk and ``iterations`` is summed.
    """
    start = time.perf_counter()
    if not isinstance(options, UnlearnOptions):
        raise ValueError("options must be an UnlearnOptions")
    device = resolve_device(options.device)
    obj = Objective.for_model(model)
    d, k = model.n_features, model.n_classes
    dtype = next(iter(model.params.values())).dtype
    Xa, ya = to_tensors(X_after, y_after, d, k, device, dtype, "X_after")
    Zx, Zy = to_tensors(Z_X, Z_y, d, k, device, dtype, "Z_X")
    Ztx, Zty = to_tensors(Zt_X, Zt_y, d, k, device, dtype, "Zt_X")
    names = layer_subset(obj.shapes, options.last_k_layers)
    if names == HEAD and obj.spec.has_head:
        return _unlearn_head(model, obj, Xa, ya, Zx, Zy, Ztx, Zty, options, start)
    return _unlearn_tensors(
        model, obj, Xa, ya, Zx, Zy, Ztx, Zty, options, factorization, names, start
    )


#: Parameter names of the final linear layer of every deep catalogue entry.
HEAD = ["head.weight", "head.bias"]


def _features(model: TrainedModel, obj: Objective, X: torch.Tensor) -> torch.Tensor:
    """Inputs of the ``head`` layer (n, F) for rows X, in batches, without gradients."""
    params = {n: t.to(X.device) for n, t in model.params.items()}
    parts = []
    batch = FEATURE_BATCH_CUDA if X.device.type == "cuda" else FEATURE_BATCH
    with torch.no_grad():
        for s in range(0, X.shape[0], batch):
            parts.append(obj.spec.features(obj.architecture, params, X[s : s + batch]))
    if not parts:
        F_dim = obj.shapes["head.weight"][1]
        return X.new_zeros(0, F_dim)
    return torch.cat(parts)


def _unlearn_head(
    model: TrainedModel,
    obj: Objective,
    Xa: torch.Tensor,
    ya: torch.Tensor,
    Zx: torch.Tensor,
    Zy: torch.Tensor,
    Ztx: torch.Tensor,
    Zty: torch.Tensor,
    options: UnlearnOptions,
    start: float,
) -> UpdateResult:
    """Last-layer update of a deep model as the exact linear problem it is.

    With every layer but ``head`` fixed, the features f(x) (n, F) are constants and the
    objective restricted to the head, Σ ℓ(W f + b, y) + (λ/2)‖[W, b]‖² (+ const), *is* a
    logistic regression on the features: Δ, H_SS and the residual w.r.t. the head follow in
    closed form (:meth:`_Data.linear_hvp`), on all rows (``hessian_rows`` only bounds the
    products of full-network Hessians). One forward pass over D' computes the features.
    ``gradient_residual`` is then the residual w.r.t. the head parameters
    (``gradient_residual_scope`` = "last_layer"): a full-network residual would cost a
    backward pass over D' per evaluation.
    """
    t0 = time.perf_counter()
    Fa, Fz = _features(model, obj, Xa), _features(model, obj, Zx)
    # correct_labels keeps the inputs: Z̃ has the features of Z
    same = Ztx.shape == Zx.shape and torch.equal(Ztx, Zx)
    Fzt = Fz if same else _features(model, obj, Ztx)
    feature_s = time.perf_counter() - t0
    k_out, F_dim = obj.shapes["head.weight"]
    head_model = TrainedModel(
        {"kind": "logistic_regression"},
        {"weight": model.params["head.weight"], "bias": model.params["head.bias"]},
        int(F_dim),
        model.n_classes,
        model.l2,
        {},
    )
    head_obj = Objective.for_model(head_model)
    sub = dataclasses.replace(options, last_k_layers=None, hessian_rows=None)
    res = _unlearn_tensors(
        head_model, head_obj, Fa, ya, Fz, Zy, Fzt, Zty, sub, None, ["weight", "bias"], start
    )
    params = {n: t.clone() for n, t in model.params.items()}
    params["head.weight"] = res.model.params["weight"]
    params["head.bias"] = res.model.params["bias"]
    new_model = dataclasses.replace(model, params=params)
    metrics = dict(res.metrics)
    metrics.update(
        last_k_layers=options.last_k_layers,
        reduction="head_features",
        feature_time_s=feature_s,
        gradient_residual_scope="last_layer",
        gradient_residual_subset=res.metrics["gradient_residual"],
        n_updated_params=int(k_out * (F_dim + 1)),
        wall_time_s=time.perf_counter() - start,
    )
    return UpdateResult(new_model, options.method, metrics)


def _unlearn_tensors(
    model: TrainedModel,
    obj: Objective,
    Xa: torch.Tensor,
    ya: torch.Tensor,
    Zx: torch.Tensor,
    Zy: torch.Tensor,
    Ztx: torch.Tensor,
    Zty: torch.Tensor,
    options: UnlearnOptions,
    factorization: Factorization | None,
    names: list[str],
    start: float,
) -> UpdateResult:
    """:func:`unlearn` on validated tensors (same devices and dtype)."""
    device, dtype = Xa.device, Xa.dtype
    theta0 = flatten({n: t.to(device) for n, t in model.params.items()}, obj.shapes).to(dtype)
    theta0 = theta0.detach()
    S = None if len(names) == len(obj.shapes) else _subset_index(obj.shapes, names).to(device)
    q = obj.n_params if S is None else int(S.shape[0])

    m, mt = Zx.shape[0], Ztx.shape[0]
    n_chunks = 1
    if options.chunk_size is not None and max(m, mt) > options.chunk_size:
        n_chunks = math.ceil(max(m, mt) / options.chunk_size)
    zs, zts = _split(m, n_chunks), _split(mt, n_chunks)

    metrics: dict[str, Any] = {}
    fact_ok: Factorization | None = None
    if factorization is not None:
        why = factorization.matches(model, theta0.to("cpu"))
        if why is None and not is_linear(obj):
            why = "not a linear model"
        damped = bool(options.damping) or options.damping_relative is not None
        if why is None and (S is not None or n_chunks > 1 or damped):
            why = "last_k_layers, chunk_size or damping in use"
        exact = factorization.kind == "cholesky"
        if why is None and exact and factorization.n_rows != Xa.shape[0] + m - mt:
            why = f"factorised data has {factorization.n_rows} rows, D' + Z − Z̃ has " + str(
                Xa.shape[0] + m - mt
            )
        if why is None:
            fact_ok = factorization
        else:
            metrics["factorization_note"] = f"cache not used: {why}"

    theta = theta0
    total_delta_sq = 0.0
    total_iters = 0
    step_size = 1.0
    for c in range(n_chunks):
        (a0, a1), (b0, b1) = zs[c], zts[c]
        cZx, cZy, cZtx, cZty = Zx[a0:a1], Zy[a0:a1], Ztx[b0:b1], Zty[b0:b1]
        # Data after this chunk: D' + Z[later chunks] − Z̃[later chunks].
        data = _Data(Xa, ya, [(Zx[a1:], Zy[a1:], 1.0), (Ztx[b1:], Zty[b1:], -1.0)])
        delta = obj.grad_sum(theta, cZtx, cZty) - obj.grad_sum(theta, cZx, cZy)
        total_delta_sq += float(delta.norm()) ** 2
        step = _Step(obj, theta, data, S, options)
        b = delta if S is None else delta[S]
        cm: dict[str, Any] = {}
        if options.method == "second_order" and options.damping_relative is not None:
            lam = power_iteration(
                step.hvp, q, dtype=dtype, device=device, max_iter=options.power_iterations
            )
            options = dataclasses.replace(
                options, damping=options.damping_relative * abs(lam), damping_relative=None
            )
            step.options = options
            cm["lambda_max"] = lam
        if options.method == "second_order":
            wb = None
            if fact_ok is not None and fact_ok.kind == "cholesky":
                wb = (
                    low_rank_factor(obj, theta, cZx, cZy),
                    low_rank_factor(obj, theta, cZtx, cZty),
                )
            upd = -_second_order(step, b, options, cm, fact_ok, wb)
        else:
            if options.tau is not None:
                tau, source = options.tau, "option"
            else:
                lam_max = power_iteration(
                    step.hvp, q, dtype=dtype, device=device, max_iter=options.power_iterations
                )
                tau, source = 1.0 / lam_max, "power_iteration"
                cm["lambda_max"] = lam_max
            upd = -tau * b
            cm.update(solver="none", tau=tau, tau_source=source, damping=options.damping)
        update = torch.zeros_like(theta)
        if S is None:
            update = upd
        else:
            update[S] = upd
        if options.line_search:
            f0 = data.value(obj, theta)
            g0 = data.gradient(obj, theta)
            slope = float(g0.dot(update))
            step_size = 1.0
            while step_size >= 2.0**-30:
                if data.value(obj, theta + step_size * update) <= f0 + 1e-4 * step_size * slope:
                    break
                step_size *= 0.5
            else:
                step_size = 0.0
            update = step_size * update
        theta = theta + update
        total_iters += int(cm.get("iterations", 0) or 0)
        metrics.update(cm)
    if options.method == "second_order":
        metrics["iterations"] = total_iters

    new_theta = theta
    g_after = obj.gradient(new_theta, Xa, ya)
    residual = float(g_after.norm())
    before = float(obj.gradient(theta0, Xa, ya).norm())
    params = {
        n: t.detach().to("cpu").contiguous().clone()
        for n, t in unflatten(new_theta, obj.shapes).items()
    }
    new_model = dataclasses.replace(model, params=params)
    if S is not None:
        metrics["gradient_residual_subset"] = float(g_after[S].norm())
    metrics.setdefault("gradient_residual_scope", "all")
    metrics.update(
        update_norm=float((new_theta - theta0).norm()),
        gradient_residual=residual,
        gradient_residual_before=before,
        delta_norm=math.sqrt(total_delta_sq),
        step_size=step_size,
        n_affected=int(max(m, mt)),
        chunks=n_chunks,
        n_updated_params=q,
        last_k_layers=options.last_k_layers,
        wall_time_s=time.perf_counter() - start,
    )
    return UpdateResult(new_model, options.method, metrics)
