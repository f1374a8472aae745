"""Cached Hessian factorisations of linear models and their low-rank (Woodbury) corrections.

For a linear model (``logistic_regression``, ``linear_svm``) the logits are z_i = W̃ x̃_i with
x̃ = [x, 1] and W̃ = [W | b] (k_out, d+1). The per-sample data Hessian w.r.t. the flat θ is
C_i ⊗ x̃_i x̃_iᵀ (in the class-major augmented layout), C_i = ∂²ℓ/∂z² (k_out, k_out): rank 1
for a binary model (c_i x̃ x̃ᵀ), rank ≤ k for a multinomial one (C_i = diag p − ppᵀ). Hence
the Hessian on the corrected data D' = D − Z + Z̃ at θ* is

    H_D' = H_D − U_Z U_Zᵀ + U_Z̃ U_Z̃ᵀ,    U = columns (S_i e_c) ⊗ x̃_i with S_i S_iᵀ = C_i,

and with a cached Cholesky factor H_D = L Lᵀ (built once per model version) the Newton system
H_D' x = Δ is solved by the Woodbury identity in O(p²·r + r³) for r = rank(U) instead of
O(n p² + p³) (n rows, p parameters).

Beyond the dense size (``exact_max_params``) a multiclass linear model caches the *block
preconditioner* of its conjugate-gradient solves instead (kind ``"block_inverse"``): the inverses
of the per-class (d+1)×(d+1) diagonal blocks of H + λI, so later requests skip building them.

Serialisation: safetensors only (tensors ``L`` and ``theta``, string metadata), never pickle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch.func import hessian as func_hessian
from torch.func import vmap

from .architectures import flatten, validate_architecture
from .hessian import cholesky, dense_hessian
from .model import TrainedModel, resolve_device, to_tensors
from .objective import BATCH_SIZE, Objective

FORMAT = "unlearnd.factorization"
FORMAT_VERSION = "1"

#: Catalogue kinds whose logits are affine in x with parameters ``weight`` (k, d), ``bias`` (k,).
LINEAR_KINDS: tuple[str, ...] = ("logistic_regression", "linear_svm")


def is_linear(obj: Objective) -> bool:
    """True if ``obj`` is a linear model with the ``weight``/``bias`` layout."""
    return obj.spec.kind in LINEAR_KINDS and list(obj.shapes) == ["weight", "bias"]


def linear_dims(obj: Objective) -> tuple[int, int]:
    """(k_out, d) of a linear model."""
    k, d = obj.shapes["weight"]
    return int(k), int(d)


def flat_perm(k: int, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """perm (k·(d+1),): flat index of augmented coordinate (a, j) stored at a·(d+1) + j.

    The flat layout is [weight (k·d, row-major), bias (k)]; j = d is the bias.
    """
    m = d + 1
    a_idx = torch.arange(k, device=device).repeat_interleave(m)
    j_idx = torch.arange(m, device=device).repeat(k)
    return torch.where(j_idx < d, a_idx * d + j_idx, k * d + a_idx)


def augment(X: torch.Tensor) -> torch.Tensor:
    """x̃ = [x, 1], shape (n, d+1)."""
    return torch.cat([X, torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device)], dim=1)


def logit_curvature(
    obj: Objective, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """C_i = ∂²ℓ(z_i, y_i)/∂z² (n, k_out, k_out).

    Closed form for logistic regression (binary p(1 − p); multinomial diag p − p pᵀ), the
    spec's loss through torch.func otherwise (the tests compare both).
    """
    spec = obj.spec
    if spec.kind == "logistic_regression":
        with torch.no_grad():
            z = obj.logits(theta.detach(), X)
            if z.shape[1] == 1:
                p1 = torch.sigmoid(z)
                return (p1 * (1.0 - p1)).unsqueeze(2)
            P = torch.softmax(z, dim=1)
            return torch.diag_embed(P) - P.unsqueeze(2) * P.unsqueeze(1)

    def loss1(z: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return spec.losses(z.unsqueeze(0), yi.unsqueeze(0)).sum()

    f = vmap(func_hessian(loss1))
    k = obj.shapes["weight"][0]
    parts = []
    with torch.no_grad():
        for s in range(0, X.shape[0], BATCH_SIZE):
            logits = obj.logits(theta.detach(), X[s : s + BATCH_SIZE])
            parts.append(f(logits, y[s : s + BATCH_SIZE]))
    if not parts:
        return theta.new_zeros(0, k, k)
    return torch.cat(parts)


def glm_diagonal(
    obj: Objective, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """diag of the data Hessian Σ_i C_i ⊗ x̃ x̃ᵀ (p,), no regulariser, flat layout."""
    k, d = linear_dims(obj)
    out = torch.zeros(k * (d + 1), dtype=theta.dtype, device=theta.device)
    for s in range(0, X.shape[0], BATCH_SIZE):
        Xb, yb = X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE]
        cd = torch.diagonal(logit_curvature(obj, theta, Xb, yb), dim1=1, dim2=2)  # (nb, k)
        out += (cd.T @ augment(Xb) ** 2).reshape(-1)  # (k, d+1) class-major
    flat = torch.empty_like(out)
    flat[flat_perm(k, d, theta.device)] = out
    return flat


def glm_blocks(
    obj: Objective, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """Per-class diagonal blocks Σ_i C_i[a, a] x̃_i x̃_iᵀ (k_out, d+1, d+1), no regulariser."""
    k, d = linear_dims(obj)
    m = d + 1
    out = torch.zeros(k, m, m, dtype=theta.dtype, device=theta.device)
    for s in range(0, X.shape[0], BATCH_SIZE):
        Xb, yb = X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE]
        cd = torch.diagonal(logit_curvature(obj, theta, Xb, yb), dim1=1, dim2=2)
        out += curvature_blocks(Xb, cd)
    return out


def curvature_blocks(X: torch.Tensor, cdiag: torch.Tensor) -> torch.Tensor:
    """Σ_i cdiag[i, a] x̃_i x̃_iᵀ for every class a (k, d+1, d+1), from X (n, d), cdiag (n, k)."""
    Xt = augment(X)
    return torch.stack([(Xt * cdiag[:, a : a + 1]).T @ Xt for a in range(cdiag.shape[1])])


def sampled_curvature_blocks(
    X: torch.Tensor,
    cdiag: torch.Tensor,
    rows: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Unbiased importance-sampled estimate of :func:`curvature_blocks` (k, d+1, d+1).

    For each class a, ``rows`` rows are drawn with replacement with probability
    π_i ∝ c_ia‖x̃_i‖² (the trace of row i's contribution), each weighted c_ia/(rows·π_i): every
    sampled term then has the same trace S_a/rows (S_a = Σ_i c_ia‖x̃_i‖²), which keeps the
    variance far below uniform subsampling (on Fashion-MNIST, 1,024 rows per class precondition
    CG as well as the exact blocks of all 60,000 rows). Products in ``dtype`` (a preconditioner
    only has to approximate H); the result is returned in X's dtype. Deterministic for a seed.
    """
    n, k = cdiag.shape  # c_ia ≥ 0 (convex losses); negative entries would never be drawn
    m = X.shape[1] + 1
    out = torch.zeros(k, m, m, dtype=X.dtype, device=X.device)
    if n == 0:
        return out
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sq_norms = torch.linalg.vector_norm(X, dim=1).square() + 1.0  # ‖x̃_i‖², no (n, d) temporary
    weight = cdiag.clamp_min(0.0) * sq_norms.unsqueeze(1)  # (n, k)
    for a in range(k):
        total = float(weight[:, a].sum())
        if total <= 0.0:
            continue
        prob = (weight[:, a] / total).to("cpu")
        pick = torch.multinomial(prob, rows, replacement=True, generator=gen).to(X.device)
        Xs = augment(X[pick]).to(dtype)
        w = (cdiag[pick, a] / (rows * prob.to(X.device)[pick])).to(dtype)
        out[a] = ((Xs * w.unsqueeze(1)).T @ Xs).to(X.dtype)
    return out


def low_rank_factor(
    obj: Objective, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, rtol: float = 1e-13
) -> torch.Tensor:
    """U (p, r) with U Uᵀ = Σ_i C_i ⊗ x̃_i x̃_iᵀ (the data Hessian of the rows), flat layout.

    C_i = V Λ Vᵀ (eigh); each eigenpair with λ > rtol·max λ gives the column √λ v ⊗ x̃_i
    (binary: one column √c_i x̃_i per row; multinomial: k − 1 columns per row).
    """
    k, d = linear_dims(obj)
    p = k * (d + 1)
    if X.shape[0] == 0:
        return theta.new_zeros(p, 0)
    C = logit_curvature(obj, theta, X, y)
    evals, evecs = torch.linalg.eigh(C)  # (n, k), (n, k, k)
    evals = evals.clamp_min(0.0)
    S = evecs * evals.sqrt().unsqueeze(1)  # columns √λ_c v_c, (n, k, k)
    keep = evals > rtol * max(float(evals.max()), 1e-300)  # (n, k)
    Xt = augment(X)
    cols = S.transpose(1, 2).unsqueeze(-1) * Xt.unsqueeze(1).unsqueeze(1)  # (n, c, k, d+1)
    cols = cols[keep]  # (r, k, d+1)
    U = torch.empty(p, cols.shape[0], dtype=theta.dtype, device=theta.device)
    U[flat_perm(k, d, theta.device)] = cols.reshape(cols.shape[0], p).T
    return U


#: Below about this many flops (p²·(r + 1)) the Woodbury solve runs on one CPU thread: OpenMP
#: start-up and contention cost far more than a small triangular solve (measured here: 0.13 ms
#: for one 785×785 solve on one thread, 20–70 ms on two threads beside another busy process).
SMALL_SOLVE_FLOPS = 5e8


@contextlib.contextmanager
def _few_threads(active: bool) -> Iterator[None]:
    """Run the block with one intra-op thread when ``active`` (restored afterwards)."""
    if not active:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: Kinds of cached factorisation: the dense Cholesky factor of H, or the inverses of the
#: per-class diagonal blocks of H (the CG preconditioner of larger multiclass linear models).
FACTORIZATION_KINDS: tuple[str, ...] = ("cholesky", "block_inverse")


@dataclass
class Factorization:
    """A cached factorisation of H(θ*; D) = ∇²L(θ*; D) (+ μI) of one model version.

    ``kind`` "cholesky": ``L`` (p, p) the lower-triangular Cholesky factor (exact solves and
    Woodbury corrections). ``kind`` "block_inverse": ``L`` (k, d+1, d+1) the inverses of the
    per-class diagonal blocks of H (a CG preconditioner; approximate by design, so it serves
    the data D' = D − Z + Z̃ of any request on this version). ``theta`` (p,) the version's flat
    parameters (the cache is used only when they match the model exactly), ``damping`` μ added
    by the Cholesky safeguard (normally 0), ``n_rows`` |D|, plus the architecture, sizes and λ.
    """

    L: torch.Tensor
    theta: torch.Tensor
    architecture: dict
    n_features: int
    n_classes: int
    l2: float
    n_rows: int
    damping: float = 0.0
    kind: str = "cholesky"

    @classmethod
    def of_version(
        cls,
        model: TrainedModel,
        obj: Objective,
        L: torch.Tensor,
        theta: torch.Tensor,
        n_rows: int,
        *,
        kind: str = "cholesky",
        damping: float = 0.0,
    ) -> Factorization:
        """The factorisation ``L`` of ``model`` at flat θ on its n_rows training rows (CPU)."""
        return cls(
            L=L.to("cpu"),
            theta=theta.to("cpu"),
            architecture=dict(obj.architecture),
            n_features=int(model.n_features),
            n_classes=int(model.n_classes),
            l2=float(model.l2),
            n_rows=n_rows,
            damping=damping,
            kind=kind,
        )

    def matches(self, model: TrainedModel, theta: torch.Tensor) -> str | None:
        """Why this factorisation cannot serve ``model`` at flat parameters ``theta``, or None."""
        if validate_architecture(dict(model.architecture)) != self.architecture:
            return "architecture differs"
        if (model.n_features, model.n_classes) != (self.n_features, self.n_classes):
            return "problem size differs"
        if float(model.l2) != self.l2:
            return "l2 differs"
        th = self.theta.to(device=theta.device, dtype=theta.dtype)
        if th.shape != theta.shape or not torch.equal(th, theta):
            return "parameters differ from the factorised version"
        if self.kind == "block_inverse":
            m = model.n_features + 1
            if tuple(self.L.shape) != (th.shape[0] // m, m, m) or th.shape[0] % m:
                return f"block factor shape {tuple(self.L.shape)} does not fit the model"
        return None

    def to_bytes(self) -> bytes:
        """safetensors bytes (tensors ``L``, ``theta``; metadata as JSON strings)."""
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": json.dumps(self.architecture, sort_keys=True),
            "n_features": json.dumps(int(self.n_features)),
            "n_classes": json.dumps(int(self.n_classes)),
            "l2": json.dumps(float(self.l2)),
            "n_rows": json.dumps(int(self.n_rows)),
            "damping": json.dumps(float(self.damping)),
            "kind": self.kind,
        }
        tensors = {
            "L": self.L.detach().to("cpu").contiguous(),
            "theta": self.theta.detach().to("cpu").contiguous(),
        }
        return st_save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> Factorization:
        """Inverse of :meth:`to_bytes`; ValueError on a foreign or malformed file."""
        try:
            tensors = st_load(data)
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8 : 8 + header_len])["__metadata__"]
        except Exception as exc:
            raise ValueError(f"not a safetensors factorisation: {exc}") from exc
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError("not an unlearnd factorisation (format metadata)")
        L, theta = tensors["L"], tensors["theta"]
        kind = meta.get("kind", "cholesky")
        p = theta.shape[0]
        if kind == "cholesky":
            ok = L.shape == (p, p)
        elif kind == "block_inverse":
            ok = L.ndim == 3 and L.shape[1] == L.shape[2] and L.shape[0] * L.shape[1] == p
        else:
            raise ValueError(f"unknown factorisation kind {kind!r}")
        if not ok:
            raise ValueError(f"{kind} factor shape {tuple(L.shape)} does not match θ {theta.shape}")
        return cls(
            L=L,
            theta=theta,
            architecture=json.loads(meta["architecture"]),
            n_features=json.loads(meta["n_features"]),
            n_classes=json.loads(meta["n_classes"]),
            l2=json.loads(meta["l2"]),
            n_rows=json.loads(meta["n_rows"]),
            damping=json.loads(meta["damping"]),
            kind=kind,
        )

    def woodbury_solve(
        self,
        b: torch.Tensor,
        U_minus: torch.Tensor,
        U_plus: torch.Tensor,
    ) -> torch.Tensor:
        """x = (L Lᵀ − U₋U₋ᵀ + U₊U₊ᵀ)⁻¹ b by the Woodbury identity.

        With W = L⁻¹[U₋ U₊], s = [−1…, +1…] and K = diag(s) + WᵀW (r × r, solved by LU):
        x = L⁻ᵀ (L⁻¹b − W K⁻¹ Wᵀ L⁻¹b). Cost O(p² r + p r² + r³). Kind "cholesky" only.
        """
        if self.kind != "cholesky":
            raise ValueError(f"a {self.kind} factorisation cannot solve exactly")
        p, r = b.shape[0], U_minus.shape[1] + U_plus.shape[1]
        with _few_threads(b.device.type == "cpu" and p * p * (r + 1) < SMALL_SOLVE_FLOPS):
            return self._woodbury_solve(b, U_minus, U_plus)

    def _woodbury_solve(
        self, b: torch.Tensor, U_minus: torch.Tensor, U_plus: torch.Tensor
    ) -> torch.Tensor:
        L = self.L.to(device=b.device, dtype=b.dtype)
        y0 = torch.linalg.solve_triangular(L, b.unsqueeze(1), upper=False)
        U = torch.cat([U_minus, U_plus], dim=1)
        if U.shape[1]:
            W = torch.linalg.solve_triangular(L, U, upper=False)
            s = torch.cat(
                [
                    -torch.ones(U_minus.shape[1], dtype=b.dtype, device=b.device),
                    torch.ones(U_plus.shape[1], dtype=b.dtype, device=b.device),
                ]
            )
            K = torch.diag(s) + W.T @ W
            y0 = y0 - W @ torch.linalg.solve(K, W.T @ y0)
        return torch.linalg.solve_triangular(L.T, y0, upper=True).squeeze(1)


def build_factorization(
    model: TrainedModel,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    device: str = "cpu",
    max_params: int = 5000,
) -> Factorization:
    """Dense H(θ*; D) (closed form for linear models, λI included) and its Cholesky factor.

    X (n, d), y (n,): the training data D of the version. Raises ValueError beyond
    ``max_params`` parameters (a dense Hessian is never formed there).
    """
    obj = Objective.for_model(model)
    if obj.n_params > max_params:
        raise ValueError(
            f"model has {obj.n_params} parameters; a cached factorisation needs a dense Hessian, "
            f"limited to {max_params}"
        )
    Xt, yt, theta = version_tensors(model, obj, X, y, device)
    L, mu = cholesky(dense_hessian(obj, theta, Xt, yt))
    return Factorization.of_version(model, obj, L, theta, int(Xt.shape[0]), damping=float(mu))


def version_tensors(
    model: TrainedModel,
    obj: Objective,
    X: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    device: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X (n, d), y (n,), flat θ (p,)) of a model version on ``device``, in its parameters'
    dtype: the inputs of a cached factorisation."""
    dev = resolve_device(device)
    dtype = next(iter(model.params.values())).dtype
    Xt, yt = to_tensors(X, y, model.n_features, model.n_classes, dev, dtype)
    theta = flatten({n: t.to(dev) for n, t in model.params.items()}, obj.shapes).to(dtype)
    return Xt, yt, theta


def describe(f: Factorization) -> Mapping[str, Any]:
    """Small JSON-able summary (for version cards)."""
    return {
        "kind": f.kind,
        "n_params": int(f.theta.shape[0]),
        "n_rows": f.n_rows,
        "damping": f.damping,
        "bytes": int(f.L.numel() * f.L.element_size()),
    }
