"""Unlearning updates (Warnecke et al., NDSS 2023) on the SUM objective."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .architectures import flatten, unflatten
from .hessian import cholesky, cholesky_solve, dense_hessian, largest_eigenvalue
from .model import TrainedModel, resolve_device, to_tensors
from .objective import Objective
from .options import UnlearnOptions


@dataclass
class UpdateResult:
    """The updated model, the method used and its evidence (``metrics``)."""

    model: TrainedModel
    method: str
    metrics: dict


def unlearn(
    model: TrainedModel,
    X_after: np.ndarray,
    y_after: np.ndarray,
    Z_X: np.ndarray,
    Z_y: np.ndarray,
    Zt_X: np.ndarray,
    Zt_y: np.ndarray,
    options: UnlearnOptions,
) -> UpdateResult:
    """Move θ* as if the model had been trained on the corrected data D'.

    X_after (n', d), y_after (n',): the whole corrected training set D'. Z_X (m, d), Z_y (m,):
    the affected points as they are now; Zt_X, Zt_y: the same points after correction (shape
    (0, d) / (0,) for a deletion). Δ = Σ_{Z̃} ∇ℓ(z̃, θ*) − Σ_Z ∇ℓ(z, θ*) from per-sample gradients.

    - second order: θ' = θ* − H⁻¹Δ, H = ∇²L(θ*; D') dense, solved by Cholesky;
    - first order: θ' = θ* − τΔ (τ from ``options`` or 1/λ̂_max of that Hessian).

    metrics: ``update_norm`` ‖θ' − θ*‖₂, ``gradient_residual`` ‖∇L(θ'; D')‖₂,
    ``gradient_residual_before`` ‖∇L(θ*; D')‖₂, ``delta_norm`` ‖Δ‖₂, ``wall_time_s``,
    ``solver`` ("cholesky" | "none"), ``damping`` (second order), ``tau`` and ``tau_source``
    ("power_iteration" | "option", first order), ``step_size`` (1.0 unless
    ``line_search``), ``n_affected`` = max(|Z|, |Z̃|).
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
    theta = flatten({n: t.to(device) for n, t in model.params.items()}, obj.shapes).to(dtype)

    delta = obj.grad_sum(theta, Ztx, Zty) - obj.grad_sum(theta, Zx, Zy)
    metrics: dict[str, Any] = {}
    if options.method == "second_order":
        H = dense_hessian(obj, theta, Xa, ya)
        L, mu = cholesky(H)
        update = -cholesky_solve(L, delta)
        metrics.update(solver="cholesky", damping=mu)
    else:
        if options.tau is not None:
            tau, source = options.tau, "option"
        else:
            lam_max = largest_eigenvalue(obj, theta, Xa, ya)
            tau, source = 1.0 / lam_max, "power_iteration"
            metrics["lambda_max"] = lam_max
        update = -tau * delta
        metrics.update(solver="none", tau=tau, tau_source=source)
    step_size = 1.0
    if options.line_search:
        f0, g0 = obj.value_and_grad(theta, Xa, ya)
        slope = float(g0.dot(update))
        while step_size >= 2.0**-30:
            if (
                float(obj.value(theta + step_size * update, Xa, ya))
                <= f0 + 1e-4 * step_size * slope
            ):
                break
            step_size *= 0.5
        else:
            step_size = 0.0
        update = step_size * update
    new_theta = theta + update
    residual = float(obj.gradient(new_theta, Xa, ya).norm())
    before = float(obj.gradient(theta, Xa, ya).norm())
    params = {
        n: t.detach().to("cpu").contiguous().clone()
        for n, t in unflatten(new_theta, obj.shapes).items()
    }
    new_model = TrainedModel(dict(model.architecture), params, d, k, model.l2, dict(model.training))
    metrics.update(
        update_norm=float(update.norm()),
        gradient_residual=residual,
        gradient_residual_before=before,
        delta_norm=float(delta.norm()),
        step_size=step_size,
        n_affected=int(max(Zx.shape[0], Ztx.shape[0])),
        wall_time_s=time.perf_counter() - start,
    )
    return UpdateResult(new_model, options.method, metrics)
