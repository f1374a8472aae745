"""Deterministic training of convex models to a tight gradient tolerance."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from .architectures import get_spec, param_shapes, unflatten
from .hessian import cholesky, cholesky_solve, dense_hessian
from .model import CONVEX_DTYPE, TrainedModel, resolve_device, to_tensors
from .objective import Objective
from .options import TrainingOptions


def _newton(
    obj: Objective,
    theta: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor, int, bool]:
    """Damped Newton: step −H⁻¹g (Cholesky), Armijo backtracking (c = 1e-4, halving)."""
    tiny_steps = 0
    for it in range(max_iter):
        f, g = obj.value_and_grad(theta, X, y)
        if float(g.norm()) <= tol:
            return theta, it, True
        L, _ = cholesky(dense_hessian(obj, theta, X, y))
        step = -cholesky_solve(L, g)
        dec = float(g.dot(step))  # < 0
        if -dec <= 1e-12 * (1.0 + abs(f)):
            # Inside the quadratic region the decrease is below rounding of f: take the full step.
            tiny_steps += 1
            if tiny_steps > 5:
                return theta, it, False
            theta = theta + step
            continue
        t = 1.0
        while t >= 1e-12:
            if float(obj.value(theta + t * step, X, y)) <= f + 1e-4 * t * dec:
                break
            t *= 0.5
        else:
            return theta, it, False
        theta = theta + t * step
    f, g = obj.value_and_grad(theta, X, y)
    return theta, max_iter, float(g.norm()) <= tol


def _lbfgs(
    obj: Objective,
    theta: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    tol: float,
    max_iter: int,
    history: int = 20,
) -> tuple[torch.Tensor, int, bool]:
    """L-BFGS (two-loop recursion, history 20) with backtracking: a step is accepted on the
    Armijo condition, or, once the change of L is at rounding level, when ‖∇L‖ decreases."""
    f, g = obj.value_and_grad(theta, X, y)
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    for it in range(max_iter):
        gnorm = float(g.norm())
        if gnorm <= tol:
            return theta, it, True
        q = g.clone()
        alphas = []
        for s, yv, rho in reversed(pairs):
            a = rho * float(s.dot(q))
            q -= a * yv
            alphas.append(a)
        if pairs:
            s, yv, _ = pairs[-1]
            q *= float(s.dot(yv)) / float(yv.dot(yv))
        else:
            q /= max(gnorm, 1.0)
        for (s, yv, rho), a in zip(pairs, reversed(alphas), strict=True):
            q += s * (a - rho * float(yv.dot(q)))
        d = -q
        gd = float(g.dot(d))
        if gd >= 0:  # not a descent direction: restart from steepest descent
            pairs.clear()
            d = -g / max(gnorm, 1.0)
            gd = float(g.dot(d))
        t = 1.0
        for _ in range(60):
            f_new, g_new = obj.value_and_grad(theta + t * d, X, y)
            if f_new <= f + 1e-4 * t * gd:
                break
            if abs(f_new - f) <= 1e-13 * (1.0 + abs(f)) and float(g_new.norm()) < gnorm:
                break
            t *= 0.5
        else:
            return theta, it, False
        s = t * d
        yv = g_new - g
        sy = float(s.dot(yv))
        if sy > 1e-300:
            pairs.append((s, yv, 1.0 / sy))
            if len(pairs) > history:
                pairs.pop(0)
        theta, f, g = theta + s, f_new, g_new
    return theta, max_iter, float(g.norm()) <= tol


def train(
    architecture: dict,
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    options: TrainingOptions,
    noise: np.ndarray | torch.Tensor | None = None,
) -> tuple[TrainedModel, dict]:
    """Train from θ = 0 by minimising L(θ; D) = Σ ℓ + (λ/2)‖θ‖² (float64, deterministic).

    X (n, d) numeric, y (n,) integers in [0, n_classes). Returns the model (CPU float64 params)
    and metrics {"loss": L at the solution (sum objective), "grad_norm": ‖∇L‖₂,
    "train_accuracy", "iterations", "wall_time_s", "solver", "converged"}.
    ``noise``: objective perturbation b (p,) of certified training (convex models only): the
    objective gains bᵀθ and the model carries b (``model.noise``, never serialised).
    """
    start = time.perf_counter()
    if not isinstance(options, TrainingOptions):
        raise ValueError("options must be a TrainingOptions")
    spec = get_spec(architecture)
    arch = spec.normalize(architecture)
    if not spec.convex:  # mlp, cnn, char_lstm: minibatch training (unlearning.deep)
        from .deep import train_deep

        if noise is not None:
            raise ValueError("objective perturbation applies to convex models only")

        return train_deep(architecture, X, y, n_classes, options)
    Xa = np.asarray(X)
    if Xa.ndim != 2 or Xa.shape[0] == 0:
        raise ValueError(f"X must have shape (n, d) with n >= 1, got {Xa.shape}")
    n, d = Xa.shape
    shapes = param_shapes(arch, d, n_classes)
    device = resolve_device(options.device)
    Xt, yt = to_tensors(Xa, y, d, n_classes, device)
    torch.manual_seed(options.seed)
    b = None
    if noise is not None:
        b = torch.as_tensor(noise, dtype=CONVEX_DTYPE).reshape(-1).to(device)
        if b.shape[0] != sum(math.prod(v) for v in shapes.values()):
            raise ValueError(f"noise has {b.shape[0]} entries, the model has more or fewer")
    obj = Objective(spec, arch, shapes, options.l2, b)
    theta0 = torch.zeros(obj.n_params, dtype=CONVEX_DTYPE, device=device)
    tol = options.grad_tol * max(1, n)
    solver = options.solver
    if solver == "auto":
        solver = "newton" if obj.n_params <= options.newton_max_params else "lbfgs"
    run = _newton if solver == "newton" else _lbfgs
    theta, iters, converged = run(obj, theta0, Xt, yt, tol, options.max_iter)
    loss, g = obj.value_and_grad(theta, Xt, yt)
    params = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in unflatten(theta, shapes).items()
    }
    model = TrainedModel(
        arch,
        params,
        d,
        int(n_classes),
        options.l2,
        options.to_dict(),
        noise=None if b is None else b.detach().to("cpu").clone(),
    )
    metrics: dict[str, Any] = {
        "loss": float(loss),
        "grad_norm": float(g.norm()),
        "train_accuracy": obj.accuracy(theta, Xt, yt),
        "iterations": int(iters),
        "wall_time_s": time.perf_counter() - start,
        "solver": solver,
        "converged": bool(converged),
    }
    return model, metrics
