"""Option dataclasses with validation (``from_dict`` rejects unknown keys and bad values)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .model import resolve_device


def _check_keys(cls: type, d: Any, what: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(d).__name__}")
    allowed = [f.name for f in fields(cls)]
    for key in d:
        if key not in allowed:
            raise ValueError(f"unknown {what} field '{key}'; allowed: {', '.join(allowed)}")


def _positive_float(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"'{name}' must be a finite number > 0, got {v!r}")
    return float(v)


def _int_at_least(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"'{name}' must be an integer >= {lo}, got {v!r}")
    return int(v)


def _device(v: Any) -> str:
    try:
        resolve_device(v)
    except ValueError as exc:
        raise ValueError(f"'device': {exc}") from exc
    return str(v)


@dataclass
class TrainingOptions:
    """Training options of convex models.

    - ``l2``: λ > 0 of L(θ; D) = Σ_z ℓ(z, θ) + (λ/2)‖θ‖² (sum convention; bias regularised).
    - ``seed``: seeds every random choice (the convex solvers start from θ = 0 and are
      deterministic; the seed is recorded and used by stochastic architectures).
    - ``max_iter``: iteration limit of the solver (Newton or L-BFGS iterations).
    - ``grad_tol``: convergence when ‖∇L(θ; D)‖₂ ≤ grad_tol · max(1, n), n = number of training
      points. ‖∇L‖ of the sum objective grows like n, so this is a per-point tolerance.
    - ``solver``: ``"auto"`` (Newton with dense Hessian + Cholesky and backtracking line search
      when the parameter count ≤ ``newton_max_params``, else L-BFGS), ``"newton"``, ``"lbfgs"``.
    - ``newton_max_params``: threshold of ``"auto"``.
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    """

    l2: float = 1e-3
    seed: int = 0
    max_iter: int = 200
    grad_tol: float = 1e-10
    solver: str = "auto"
    newton_max_params: int = 4096
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.l2 = _positive_float("l2", self.l2)
        self.seed = _int_at_least("seed", self.seed, 0)
        self.max_iter = _int_at_least("max_iter", self.max_iter, 1)
        self.grad_tol = _positive_float("grad_tol", self.grad_tol)
        if self.solver not in ("auto", "newton", "lbfgs"):
            raise ValueError(f"'solver' must be 'auto', 'newton' or 'lbfgs', got {self.solver!r}")
        self.newton_max_params = _int_at_least("newton_max_params", self.newton_max_params, 1)
        self.device = _device(self.device)

    @classmethod
    def from_dict(cls, d: dict) -> TrainingOptions:
        """Build from JSON; ValueError names the offending field."""
        _check_keys(cls, d, "training option")
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON-able dict of all fields."""
        return asdict(self)


@dataclass
class UnlearnOptions:
    """Options of an unlearning update.

    - ``method``: ``"second_order"`` (θ* − H⁻¹Δ, dense Hessian of L on D' at θ*, Cholesky) or
      ``"first_order"`` (θ* − τΔ).
    - ``tau``: first-order step. None → τ = 1/λ̂_max, λ̂_max the largest eigenvalue of the
      Hessian of L on D' at θ*, from power iteration on Hessian-vector products. With this τ
      every eigen-component of the (quadratic-model) error shrinks: |1 − τμ| < 1 for all
      eigenvalues μ ∈ [λ, λ_max].
    - ``line_search``: if True, scale the update by the largest t ∈ {1, ½, ¼, …} that satisfies
      the Armijo condition on L(·; D') (c = 1e-4); off by default (the paper's plain update).
      It guards against overshooting, e.g. label flips of confidently classified points.
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    """

    method: str = "second_order"
    tau: float | None = None
    line_search: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in ("first_order", "second_order"):
            raise ValueError(
                f"'method' must be 'first_order' or 'second_order', got {self.method!r}"
            )
        if self.tau is not None:
            self.tau = _positive_float("tau", self.tau)
        if not isinstance(self.line_search, bool):
            raise ValueError(f"'line_search' must be true or false, got {self.line_search!r}")
        self.device = _device(self.device)

    @classmethod
    def from_dict(cls, d: dict) -> UnlearnOptions:
        """Build from JSON; ValueError names the offending field."""
        _check_keys(cls, d, "unlearning option")
        return cls(**d)
