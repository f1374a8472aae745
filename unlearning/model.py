"""The trained-model container, device resolution and input validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .architectures import ParamShapes, param_shapes

#: dtype of the parameters and of all computations for convex models.
CONVEX_DTYPE = torch.float64


@dataclass
class TrainedModel:
    """A trained model.

    ``params`` are CPU, contiguous tensors (float64 for convex models) named after the
    architecture's layout, e.g. ``weight`` (k_out, d) and ``bias`` (k_out,) with k_out = 1 for a
    binary problem and ``n_classes`` otherwise. ``l2`` is λ in the training objective
    L(θ; D) = Σ_z ℓ(z, θ) + (λ/2)‖θ‖² (SUM over points; the bias is regularised too).
    ``training`` holds the resolved training options (JSON-able).
    """

    architecture: dict
    params: dict[str, torch.Tensor]
    n_features: int
    n_classes: int
    l2: float
    training: dict = field(default_factory=dict)
    #: secret objective perturbation b (p,) float64 of a certified model; never serialised
    noise: torch.Tensor | None = field(default=None, repr=False)

    def shapes(self) -> ParamShapes:
        """Ordered parameter shapes."""
        return param_shapes(self.architecture, self.n_features, self.n_classes)


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (cuda when available, else cpu)."""
    if not isinstance(device, str):
        raise ValueError(f"device must be a string, got {type(device).__name__}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device {device!r} is not a valid torch device") from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def to_tensors(
    X: Any,
    y: Any,
    n_features: int,
    n_classes: int,
    device: torch.device,
    dtype: torch.dtype = CONVEX_DTYPE,
    name: str = "X",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate X (n, d) numeric finite and y (n,) integer in [0, n_classes); return tensors.

    X becomes ``dtype`` and y int64, both on ``device``. n may be 0.
    """
    Xa = np.asarray(X)
    ya = np.asarray(y)
    if Xa.ndim == 1 and Xa.size == 0:
        Xa = Xa.reshape(0, n_features)
    if Xa.ndim != 2 or Xa.shape[1] != n_features:
        raise ValueError(f"{name} must have shape (n, {n_features}), got {Xa.shape}")
    if not (np.issubdtype(Xa.dtype, np.number) or Xa.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {Xa.dtype}")
    Xa = Xa.astype(np.float64, copy=False)
    if not np.all(np.isfinite(Xa)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if ya.ndim != 1 or ya.shape[0] != Xa.shape[0]:
        raise ValueError(f"labels for {name} must have shape ({Xa.shape[0]},), got {ya.shape}")
    if ya.size:
        if np.issubdtype(ya.dtype, np.floating):
            if not np.all(np.isfinite(ya)) or not np.all(ya == np.round(ya)):
                raise ValueError(f"labels for {name} must be integers")
        elif not np.issubdtype(ya.dtype, np.integer):
            raise ValueError(f"labels for {name} must be integers, got dtype {ya.dtype}")
        if ya.min() < 0 or ya.max() >= n_classes:
            raise ValueError(
                f"labels for {name} must lie in [0, {n_classes}), got [{ya.min()}, {ya.max()}]"
            )
    Xt = torch.as_tensor(Xa, dtype=dtype, device=device)
    yt = torch.as_tensor(ya.astype(np.int64, copy=False), dtype=torch.int64, device=device)
    return Xt, yt
