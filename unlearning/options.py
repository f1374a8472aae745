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

    Non-convex models (mlp, cnn, char_lstm; see ``unlearning.deep``) are trained by minibatch
    descent on the mean loss (1/n)·L(θ; D), i.e. λ enters each step as weight decay λ/n; the
    convex fields ``max_iter``, ``grad_tol``, ``solver``, ``newton_max_params`` are ignored:

    - ``epochs``: passes over the training data (default 20).
    - ``lr``: learning rate (default 1e-3, suited to Adam; use ~0.05 with SGD).
    - ``batch_size``: rows per step (default 64); the order is shuffled each epoch by a
      generator seeded from ``seed``.
    - ``optimizer``: ``"adam"`` (default) or ``"sgd"`` (momentum 0.9).
    """

    l2: float = 1e-3
    seed: int = 0
    max_iter: int = 200
    grad_tol: float = 1e-10
    solver: str = "auto"
    newton_max_params: int = 4096
    device: str = "cpu"
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        self.l2 = _positive_float("l2", self.l2)
        self.seed = _int_at_least("seed", self.seed, 0)
        self.max_iter = _int_at_least("max_iter", self.max_iter, 1)
        self.grad_tol = _positive_float("grad_tol", self.grad_tol)
        if self.solver not in ("auto", "newton", "lbfgs"):
            raise ValueError(f"'solver' must be 'auto', 'newton' or 'lbfgs', got {self.solver!r}")
        self.newton_max_params = _int_at_least("newton_max_params", self.newton_max_params, 1)
        self.device = _device(self.device)
        self.epochs = _int_at_least("epochs", self.epochs, 1)
        self.lr = _positive_float("lr", self.lr)
        self.batch_size = _int_at_least("batch_size", self.batch_size, 1)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"'optimizer' must be 'adam' or 'sgd', got {self.optimizer!r}")

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
    """Options of an unlearning update (SUM objective L(θ; D) = Σ_z ℓ(z, θ) + (λ/2)‖θ‖²).

    - ``method``: ``"second_order"`` (θ* − (H + μI)⁻¹Δ, H the Hessian of L on D' at θ*) or
      ``"first_order"`` (θ* − τΔ).
    - ``tau``: first-order step. None → τ = 1/λ̂_max, λ̂_max the largest eigenvalue of the
      Hessian of L on D' at θ*, from power iteration on Hessian-vector products. With this τ
      every eigen-component of the (quadratic-model) error shrinks: |1 − τμ| < 1 for all
      eigenvalues μ ∈ [λ, λ_max].
    - ``line_search``: if True, scale the update by the largest t ∈ {1, ½, ¼, …} that satisfies
      the Armijo condition on L(·; D') (c = 1e-4); off by default (the paper's plain update).
      It guards against overshooting, e.g. label flips of confidently classified points.
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    - ``solver`` (second order): ``"exact"`` (dense Hessian + Cholesky, or a cached
      factorisation with a Woodbury correction), ``"cg"`` (preconditioned conjugate gradient on
      Hessian-vector products, H never formed), ``"lissa"`` (the stochastic recursion of Koh &
      Liang, scale from a power-iteration estimate of λ_max), ``"auto"``: exact when the number
      of updated parameters ≤ ``exact_max_params``, else cg.
    - ``damping``: μ ≥ 0 added to the Hessian (absolute units of the SUM objective). Default 0:
      convex models need none (λ > 0); use it for non-convex models.
    - ``cg_tol``: CG stops when ‖b − (H + μI)x‖₂ / ‖b‖₂ ≤ cg_tol. ``cg_max_iter``: cap on CG
      iterations (None → min(p, 1000)).
    - ``preconditioner`` (cg): ``"none"``, ``"jacobi"`` (diagonal of H: closed form for linear
      models, Hutchinson otherwise), ``"block"`` (per-class (d+1)×(d+1) blocks of a linear
      multinomial model, Cholesky per block), ``"auto"`` (block for multiclass linear models,
      jacobi for binary linear models, none otherwise).
    - ``cg_precision`` (cg): ``"double"`` (every product in the model's precision), ``"mixed"``
      (float64 linear models: iterative refinement — float64 residuals, float32 inner CG; the
      stopping rule is unchanged), ``"auto"`` (mixed for float64 linear models on ≥ 10⁷ data
      entries, where the memory-bound products dominate).
    - ``lissa_depth``: recursion steps per repeat; ``lissa_scale``: None → 1.5·λ̂_max;
      ``lissa_repeats``: independent repeats averaged; ``lissa_tol``: stop when the relative
      residual ‖b − (H + μI)h‖/‖b‖ ≤ lissa_tol.
    - ``last_k_layers``: None (all parameters) or k ≥ 1: update only the parameters of the last
      k layers (a layer = the distinct prefix before the final "." of the parameter names, in
      the architecture's order; names without "." form one layer). Δ, H and the solve are
      restricted to that subset, the rest is frozen.
    - ``chunk_size``: None or c ≥ 1: apply the change set in consecutive chunks of c affected
      points, each a full update at the current θ on the data with the chunks so far applied.
    - ``exact_max_params``: the largest (sub)problem for which a dense Hessian is formed;
      ``"exact"`` beyond it raises ValueError.
    - ``hessian_rows``: None (all of D') or r ≥ 1: Hessian-vector products for CG, LiSSA,
      power iteration and the Hutchinson diagonal use a fixed seeded subsample of r rows of D',
      scaled by n'/r so that the SUM convention holds in expectation (subsampled Newton). Δ, the
      closed-form dense Hessian and the reported gradient residual always use all rows.
    - ``damping_relative``: None or ρ > 0: damping μ = ρ·λ̂_max (power iteration on the
      Hessian), overriding ``damping`` — a scale-free choice for non-convex models.
    - ``power_iterations``: cap on the power iterations that estimate λ_max (first-order τ).
    """

    method: str = "second_order"
    tau: float | None = None
    line_search: bool = False
    device: str = "cpu"
    solver: str = "auto"
    damping: float = 0.0
    cg_tol: float = 1e-10
    cg_max_iter: int | None = None
    preconditioner: str = "auto"
    cg_precision: str = "auto"
    lissa_depth: int = 5000
    lissa_scale: float | None = None
    lissa_repeats: int = 1
    lissa_tol: float = 1e-6
    last_k_layers: int | None = None
    chunk_size: int | None = None
    exact_max_params: int = 5000
    hessian_rows: int | None = None
    power_iterations: int = 200
    damping_relative: float | None = None

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
        if self.solver not in ("auto", "exact", "cg", "lissa"):
            raise ValueError(
                f"'solver' must be 'auto', 'exact', 'cg' or 'lissa', got {self.solver!r}"
            )
        d = self.damping
        if isinstance(d, bool) or not isinstance(d, int | float) or not math.isfinite(d) or d < 0:
            raise ValueError(f"'damping' must be a finite number >= 0, got {d!r}")
        self.damping = float(d)
        self.cg_tol = _positive_float("cg_tol", self.cg_tol)
        if self.cg_max_iter is not None:
            self.cg_max_iter = _int_at_least("cg_max_iter", self.cg_max_iter, 1)
        if self.preconditioner not in ("auto", "none", "jacobi", "block", "kronecker"):
            raise ValueError(
                "'preconditioner' must be 'auto', 'none', 'jacobi', 'block' or 'kronecker', "
                f"got {self.preconditioner!r}"
            )
        if self.cg_precision not in ("auto", "double", "mixed"):
            raise ValueError(
                f"'cg_precision' must be 'auto', 'double' or 'mixed', got {self.cg_precision!r}"
            )
        self.lissa_depth = _int_at_least("lissa_depth", self.lissa_depth, 1)
        if self.lissa_scale is not None:
            self.lissa_scale = _positive_float("lissa_scale", self.lissa_scale)
        self.lissa_repeats = _int_at_least("lissa_repeats", self.lissa_repeats, 1)
        self.lissa_tol = _positive_float("lissa_tol", self.lissa_tol)
        if self.last_k_layers is not None:
            self.last_k_layers = _int_at_least("last_k_layers", self.last_k_layers, 1)
        if self.chunk_size is not None:
            self.chunk_size = _int_at_least("chunk_size", self.chunk_size, 1)
        self.exact_max_params = _int_at_least("exact_max_params", self.exact_max_params, 1)
        if self.hessian_rows is not None:
            self.hessian_rows = _int_at_least("hessian_rows", self.hessian_rows, 1)
        self.power_iterations = _int_at_least("power_iterations", self.power_iterations, 1)
        if self.damping_relative is not None:
            self.damping_relative = _positive_float("damping_relative", self.damping_relative)

    @classmethod
    def from_dict(cls, d: dict) -> UnlearnOptions:
        """Build from JSON; ValueError names the offending field."""
        _check_keys(cls, d, "unlearning option")
        return cls(**d)

    def to_dict(self) -> dict:
        """JSON-able dict of all fields."""
        return asdict(self)
