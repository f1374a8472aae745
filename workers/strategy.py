"""Which update a request gets, and when its evidence sends it to the next tier.

``auto``: convex models (logistic regression, linear SVM) get the second-order update (exact
with the cached factorisation up to ``UNLEARND_EXACT_MAX_PARAMS`` parameters, conjugate gradient
beyond); non-convex models first get the first-order update, then the second-order one on
the last layer (exact on the head features; a damped variant, then the line-searched Newton
step, :data:`SECOND_ORDER_VARIANTS`). Each tier's result is checked; bad evidence moves on to
the next tier and finally to retraining from scratch. An explicit ``first_order`` or
``second_order`` runs that update only (second order: its variants in turn) and reports any bad
evidence of the last as a warning.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unlearning import TrainedModel

#: Non-convex models: Hessian-vector products on a subsample of this many rows of D'
#: (subsampled Newton), capped power iteration, and damping μ = 0.01·λ̂_max because their
#: Hessian need not be positive definite.
NONCONVEX_HESSIAN_ROWS = 512
NONCONVEX_UPDATE = {"hessian_rows": NONCONVEX_HESSIAN_ROWS, "power_iterations": 20}
NONCONVEX_SECOND_ORDER = {
    # The last layer only, solved as the exact linear problem it is on the head features of
    # every row of D' (unlearning.updates._unlearn_head); on the full network the damped,
    # subsampled curvature misled the step (benchmarks/case_studies.py poison: 78% → 62%).
    "last_k_layers": 1,
    "solver": "cg",
    "cg_tol": 1e-4,
    "cg_max_iter": 100,
}
#: The second-order variants tried in turn for non-convex models. The head problem is convex
#: (H ⪰ λI), so both are well posed; they differ in how far the step trusts the quadratic model:
#: - "damped": μ = 1e-3·λ_max — a shrunk step that generalises (poisoned CNN labels: 65% of the
#:   lost accuracy restored against 2% for the undamped step, which over-fits the head);
#: - "newton": μ = 0 with an Armijo line search on the head objective — the full Newton step
#:   towards the corrected data (a memorised secret: exposure 28.5 → 0.34 bits, where the damped
#:   step still completed the number).
#: The first whose evidence (and efficacy check) is good is kept.
SECOND_ORDER_VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("damped", {"damping_relative": 1e-3}),
    ("newton", {"line_search": True}),
)
#: Damping of a second-order update of more than the last layer (indefinite Hessian).
NONCONVEX_DEEP_DAMPING = {"damping_relative": 0.01}
#: Options that fix the step themselves: with any of them there is one second-order variant.
_STEP_OPTIONS = {"damping", "damping_relative", "line_search"}


#: An update is rejected when it leaves the gradient residual on the corrected data more than
#: this factor above the residual of no update at all (a tiny Δ may add a harmless remainder).
RESIDUAL_SLACK = 1.5


def tiers(
    requested: str, convex: bool, overrides: dict[str, Any] | None = None
) -> list[tuple[str, str | None]]:
    """(method, variant) pairs to try in order (``retrain`` is always the last resort of
    ``auto``); ``variant`` names one of :data:`SECOND_ORDER_VARIANTS` (non-convex second order
    without step options in ``overrides``) or is None."""
    if convex:
        return (
            [("second_order", None), ("retrain", None)]
            if requested == "auto"
            else [(requested, None)]
        )
    fixed = bool(_STEP_OPTIONS & set(overrides or {}))
    second: list[tuple[str, str | None]] = [("second_order", None)]
    if not fixed:
        second = [("second_order", v) for v, _ in SECOND_ORDER_VARIANTS]
    if requested == "auto":
        return [("first_order", None), *second, ("retrain", None)]
    return second if requested == "second_order" else [(requested, None)]


def update_options(
    method: str,
    convex: bool,
    overrides: dict[str, Any],
    exact_max_params: int,
    device: str,
    variant: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments of :class:`unlearning.UnlearnOptions` for one tier."""
    opts: dict[str, Any] = {
        "method": method,
        "device": device,
        "exact_max_params": exact_max_params,
    }
    if not convex:
        opts.update(NONCONVEX_UPDATE)
        if method == "second_order":
            opts.update(NONCONVEX_SECOND_ORDER)
            if variant is not None:
                opts.update(dict(SECOND_ORDER_VARIANTS)[variant])
            if overrides.get("last_k_layers", 1) != 1 and not (
                {"damping", "damping_relative"} & set(overrides)
            ):
                opts.update(NONCONVEX_DEEP_DAMPING)
                opts.pop("line_search", None)
    opts.update(overrides)
    return opts


def bad_evidence(
    after: TrainedModel,
    metrics: dict[str, Any],
    loss_before: float | None = None,
    loss_after: float | None = None,
) -> str | None:
    """Why an update cannot be trusted, or ``None``: non-finite parameters, a gradient
    residual on the corrected data that rose beyond ``RESIDUAL_SLACK`` times that of no update,
    or (non-convex) a loss on the retained data that rose."""
    if not all(bool(np.isfinite(t.numpy()).all()) for t in after.params.values()):
        return "the update produced non-finite parameters"
    res_after, res_before = (
        metrics.get("gradient_residual"),
        metrics.get("gradient_residual_before"),
    )
    if (
        res_after is not None
        and res_before is not None
        and not res_after <= RESIDUAL_SLACK * res_before + 1e-9
    ):
        return (
            f"the gradient residual on the corrected data rose from {res_before:.3g} to "
            f"{res_after:.3g}"
        )
    if loss_before is not None and loss_after is not None and not loss_after <= loss_before:
        return f"the loss on the corrected data rose from {loss_before:.4g} to {loss_after:.4g}"
    return None
