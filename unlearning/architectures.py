"""Architecture catalogue: a registry of model families keyed by ``kind``.

Every entry is an :class:`ArchitectureSpec` that knows how to normalise its JSON description,
lay out its parameters (an *ordered* mapping name -> shape; the flat parameter vector θ is the
concatenation of the row-major flattened tensors in that order), compute the logits and the
per-sample loss, and optionally provide a closed-form Hessian of the data term.

Supported now: ``logistic_regression`` (binary when ``n_classes == 2``: one logit and
BCE-with-logits on y ∈ {0, 1}; multinomial otherwise: ``n_classes`` logits and softmax
cross-entropy). Planned: ``linear_svm`` (smooth hinge), ``mlp``, ``cnn``, ``char_lstm``; they
are added by subclassing :class:`ArchitectureSpec` and calling :func:`register`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

ParamShapes = dict[str, tuple[int, ...]]

#: Kinds named in the product catalogue that have no implementation yet.
PLANNED_KINDS: tuple[str, ...] = ("mlp", "cnn", "char_lstm")


def n_outputs(n_classes: int) -> int:
    """Number of logits: 1 for a binary problem, ``n_classes`` otherwise."""
    return 1 if n_classes == 2 else n_classes


class ArchitectureSpec:
    """Base class of a catalogue entry. Subclasses set ``kind`` and ``convex``."""

    kind: str = ""
    convex: bool = False
    #: True when logits = head(features(X)) with a final linear layer ``head.weight`` (k_out, F),
    #: ``head.bias`` (k_out,) (every deep entry; enables the exact last-layer update)
    has_head: bool = False

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        """Return the canonical JSON description; raise ValueError on bad options."""
        raise NotImplementedError

    def param_shapes(
        self, architecture: Mapping[str, Any], n_features: int, n_classes: int
    ) -> ParamShapes:
        """Ordered parameter names and shapes."""
        raise NotImplementedError

    def forward(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        """Logits, shape (n, n_outputs), for X of shape (n, n_features)."""
        raise NotImplementedError

    def features(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        """Inputs (n, F) of the final linear layer (entries with ``has_head`` only)."""
        raise NotImplementedError(f"{self.kind} has no separate head layer")

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ℓ, shape (n,), from logits (n, k_out) and integer labels y (n,).

        Default: cross-entropy (BCE-with-logits when k_out == 1, softmax CE otherwise), in nats.
        Must be vmap-compatible (``torch.func``).
        """
        if logits.shape[-1] == 1:
            z = logits[..., 0]
            return F.softplus(z) - y.to(z.dtype) * z
        picked = torch.gather(logits, -1, y.unsqueeze(-1)).squeeze(-1)
        return torch.logsumexp(logits, dim=-1) - picked

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities (n, n_classes) from logits (n, k_out)."""
        if logits.shape[-1] == 1:
            p1 = torch.sigmoid(logits[:, 0])
            return torch.stack([1.0 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)

    def bind(self, architecture: Mapping[str, Any]) -> ArchitectureSpec:
        """The spec to use for this architecture (entries whose loss depends on options, like
        ``linear_svm``'s smoothing, return a configured copy)."""
        return self

    def data_hessian(
        self,
        architecture: Mapping[str, Any],
        params: Mapping[str, torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor | None:
        """Closed-form Hessian (p, p) of Σ_z ℓ(z, θ) (no regulariser), or None if unavailable."""
        return None


class LogisticRegression(ArchitectureSpec):
    """Linear model: logits = X Wᵀ + b; ``weight`` (k_out, d), ``bias`` (k_out,)."""

    kind = "logistic_regression"
    convex = True

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        extra = sorted(set(architecture) - {"kind"})
        if extra:
            raise ValueError(
                f"architecture 'logistic_regression' takes no options; remove {extra} "
                "(binary vs multinomial follows from the number of classes)"
            )
        return {"kind": self.kind}

    def param_shapes(
        self, architecture: Mapping[str, Any], n_features: int, n_classes: int
    ) -> ParamShapes:
        k = n_outputs(n_classes)
        return {"weight": (k, n_features), "bias": (k,)}

    def forward(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        return X @ params["weight"].T + params["bias"]

    def data_hessian(
        self,
        architecture: Mapping[str, Any],
        params: Mapping[str, torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        W = params["weight"]
        k, d = W.shape
        n = X.shape[0]
        Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], dim=1)  # (n, d+1)
        logits = self.forward(architecture, params, X)
        if k == 1:
            # θ = [w, b] is exactly the augmented layout: H = X̃ᵀ diag(p(1-p)) X̃.
            p = torch.sigmoid(logits[:, 0])
            return (Xt * (p * (1.0 - p)).unsqueeze(1)).T @ Xt
        # Multinomial. In the augmented layout W̃ = [W | b] (k, d+1), row-major:
        # H̃ = Σ_i (diag(p_i) - p_i p_iᵀ) ⊗ x̃_i x̃_iᵀ = blockdiag(X̃ᵀ diag(P_a) X̃) - GᵀG,
        # with G_i = p_i ⊗ x̃_i.
        P = torch.softmax(logits, dim=1)
        m = d + 1
        H_aug = torch.zeros(k * m, k * m, dtype=X.dtype, device=X.device)
        for a in range(k):
            H_aug[a * m : (a + 1) * m, a * m : (a + 1) * m] = (Xt * P[:, a : a + 1]).T @ Xt
        G = (P.unsqueeze(2) * Xt.unsqueeze(1)).reshape(n, k * m)
        H_aug -= G.T @ G
        # Permute to the flat layout [weight (k*d), bias (k)].
        a_idx = torch.arange(k, device=X.device).repeat_interleave(m)
        j_idx = torch.arange(m, device=X.device).repeat(k)
        perm = torch.where(j_idx < d, a_idx * d + j_idx, k * d + a_idx)
        H = torch.empty_like(H_aug)
        H[perm.unsqueeze(1), perm.unsqueeze(0)] = H_aug
        return H


CATALOGUE: dict[str, ArchitectureSpec] = {}


def register(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add an entry to the catalogue (keyed by ``spec.kind``)."""
    CATALOGUE[spec.kind] = spec
    return spec


register(LogisticRegression())


class LinearSVM(LogisticRegression):
    """Linear SVM with a softplus-smoothed hinge: logits = X Wᵀ + b (same layout as
    ``logistic_regression``).

    Per-output loss on the margin t = ỹ·z (ỹ = +1 for the positive label, −1 otherwise):
    ℓ_h(t) = h·softplus((1 − t)/h) = h·ln(1 + exp((1 − t)/h)), smoothing ``h`` > 0 (default 0.5).
    It is convex and C^∞, ℓ_h ≥ max(0, 1 − t) with ℓ_h − hinge ≤ h·ln 2, ℓ_h → hinge as h → 0,
    and ℓ_h'' = s(1 − s)/h ≤ 1/(4h) with s = σ((1 − t)/h). Binary (2 classes): one output,
    labels 0/1 mapped to ỹ = −1/+1. Multiclass: one-vs-rest, k outputs, ℓ = Σ_a ℓ_h(ỹ_a z_a) with
    ỹ_a = +1 iff y = a. ``probabilities`` are monotone scores (sigmoid/softmax of z), not
    calibrated; their argmax is the SVM decision.
    """

    kind = "linear_svm"
    convex = True

    def __init__(self, smoothing: float = 0.5) -> None:
        self.smoothing = float(smoothing)

    def bind(self, architecture: Mapping[str, Any]) -> ArchitectureSpec:
        """The spec for this architecture's smoothing (``losses`` has no architecture)."""
        return LinearSVM(self.normalize(architecture)["smoothing"])

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        extra = sorted(set(architecture) - {"kind", "smoothing", "multiclass"})
        if extra:
            raise ValueError(
                f"architecture 'linear_svm' takes only 'smoothing' and 'multiclass'; remove {extra}"
            )
        h = architecture.get("smoothing", 0.5)
        if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h) or h <= 0:
            raise ValueError(f"linear_svm 'smoothing' must be a finite number > 0, got {h!r}")
        mc = architecture.get("multiclass", "ovr")
        if mc != "ovr":
            raise ValueError(f"linear_svm 'multiclass' must be 'ovr', got {mc!r}")
        return {"kind": self.kind, "multiclass": "ovr", "smoothing": float(h)}

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ over outputs of ℓ_h(ỹ z), shape (n,); vmap-compatible."""
        t = signed_targets(y, logits.shape[-1], logits.dtype) * logits
        return smooth_hinge(t, self.smoothing).sum(-1)

    def data_hessian(
        self,
        architecture: Mapping[str, Any],
        params: Mapping[str, torch.Tensor],
        X: torch.Tensor,
        y: torch.Tensor,
    ) -> torch.Tensor:
        """OvR: block diagonal, class a's block X̃ᵀ diag(ℓ_h''(t_ia)) X̃, in the flat layout."""
        h = float(architecture.get("smoothing", self.smoothing))
        W = params["weight"]
        k, d = W.shape
        n = X.shape[0]
        Xt = torch.cat([X, torch.ones(n, 1, dtype=X.dtype, device=X.device)], dim=1)
        z = self.forward(architecture, params, X)
        t = signed_targets(y, k, z.dtype) * z
        s = torch.sigmoid((1.0 - t) / h)
        c = s * (1.0 - s) / h  # (n, k)
        m = d + 1
        H_aug = torch.zeros(k * m, k * m, dtype=X.dtype, device=X.device)
        for a in range(k):
            H_aug[a * m : (a + 1) * m, a * m : (a + 1) * m] = (Xt * c[:, a : a + 1]).T @ Xt
        a_idx = torch.arange(k, device=X.device).repeat_interleave(m)
        j_idx = torch.arange(m, device=X.device).repeat(k)
        perm = torch.where(j_idx < d, a_idx * d + j_idx, k * d + a_idx)
        H = torch.empty_like(H_aug)
        H[perm.unsqueeze(1), perm.unsqueeze(0)] = H_aug
        return H


def signed_targets(y: torch.Tensor, k_out: int, dtype: torch.dtype) -> torch.Tensor:
    """ỹ (n, k_out) in {−1, +1}: binary (k_out = 1) 2y − 1; one-vs-rest +1 iff y = a."""
    if k_out == 1:
        return (2 * y.to(dtype) - 1).unsqueeze(-1)
    classes = torch.arange(k_out, device=y.device)
    return 2 * (y.unsqueeze(-1) == classes).to(dtype) - 1


def smooth_hinge(t: torch.Tensor, h: float) -> torch.Tensor:
    """ℓ_h(t) = h·softplus((1 − t)/h), elementwise."""
    return h * F.softplus((1.0 - t) / h)


register(LinearSVM())


def supported_kinds() -> list[str]:
    """Kinds that can be trained and unlearned now."""
    return sorted(CATALOGUE)


def get_spec(architecture: Mapping[str, Any]) -> ArchitectureSpec:
    """Catalogue entry for a (raw or normalised) architecture description."""
    if not isinstance(architecture, Mapping):
        raise ValueError(
            f'architecture must be a JSON object like {{"kind": "logistic_regression"}}, '
            f"got {type(architecture).__name__}"
        )
    kind = architecture.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ValueError(
            "architecture needs a string field 'kind'; supported: " + ", ".join(supported_kinds())
        )
    spec = CATALOGUE.get(kind)
    if spec is None:
        raise ValueError(
            f"architecture kind '{kind}' is not supported yet; supported: "
            + ", ".join(supported_kinds())
        )
    return spec.bind(architecture)


def validate_architecture(architecture: dict) -> dict:
    """Return the normalised architecture dict or raise ValueError saying what to fix."""
    return get_spec(architecture).normalize(architecture)


def _check_dims(n_features: int, n_classes: int) -> None:
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")


def param_shapes(architecture: dict, n_features: int, n_classes: int) -> ParamShapes:
    """Ordered parameter shapes of a (validated) architecture."""
    _check_dims(n_features, n_classes)
    spec = get_spec(architecture)
    return spec.param_shapes(spec.normalize(architecture), n_features, n_classes)


def parameter_count(architecture: dict, n_features: int, n_classes: int) -> int:
    """Total number of scalar parameters (length of the flat vector θ)."""
    return sum(math.prod(s) for s in param_shapes(architecture, n_features, n_classes).values())


def flatten(params: Mapping[str, torch.Tensor], shapes: ParamShapes) -> torch.Tensor:
    """Concatenate the tensors in the order of ``shapes`` into a flat vector (p,)."""
    return torch.cat([params[name].reshape(-1) for name in shapes])


def unflatten(theta: torch.Tensor, shapes: ParamShapes) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`; returns views into ``theta`` (vmap/grad-compatible)."""
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = theta[offset : offset + size].reshape(shape)
        offset += size
    if offset != theta.shape[-1]:
        raise ValueError(f"flat parameter vector has length {theta.shape[-1]}, expected {offset}")
    return out
