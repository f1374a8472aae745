"""Non-convex catalogue entries (``mlp``, ``cnn``, ``char_lstm``) and their minibatch trainer.

Every forward is written with functional ops on the flat parameter vector's views
(``F.linear``, ``F.conv2d``, ``F.max_pool2d``, an LSTM with explicit gates), so the
:class:`~unlearning.objective.Objective` machinery applies unchanged: per-sample gradients by
``torch.func`` ``grad`` + ``vmap`` and Hessian-vector products by double backward. Every
entry ends in a linear ``head`` on :meth:`DeepSpec.features`; with the other layers fixed the
head's problem is a logistic regression on the features, which the last-layer update
(``last_k_layers=1``) solves exactly in closed form (``unlearning.updates``).

Conventions
-----------
- Parameters are float32, named ``<layer>.<tensor>``: ``fc1.weight``, ``conv1.bias``,
  ``lstm.weight_ih_l0``, ``head.weight``... The layer is the prefix before the last ".", in
  the order of the forward pass (``last_k_layers`` relies on this).
- Objective (SUM convention, as everywhere): L(θ; D) = Σ_z ℓ(z, θ) + (λ/2)‖θ‖². Training
  minimises the *mean* (1/n)·L by minibatches: each step uses mean-ℓ over the batch +
  (λ/(2n))‖θ‖², i.e. the weight decay per step is λ/n.
- Outputs: ``mlp`` and ``cnn`` follow the convex models (one logit and BCE for two classes,
  ``n_classes`` logits and softmax cross-entropy otherwise); ``char_lstm`` always has
  ``n_classes`` = vocabulary-size logits.
- ``mlp``: X (n, d) float. ``cnn``: rows of X are flattened images (n, C·H·W), row-major
  (C, H, W); ``input_shape`` [C, H, W] is part of the normalised architecture (set by
  :func:`train_deep` from 3-/4-dimensional X, or given explicitly). ``char_lstm``: X (n, T)
  holds character indices as numbers (float), y (n,) the index of the next character;
  ``window`` = T and ``vocabulary`` (the characters, index order) are recorded in the
  architecture by :func:`unlearning.text.train_text`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .architectures import (
    ArchitectureSpec,
    ParamShapes,
    flatten,
    get_spec,
    n_outputs,
    param_shapes,
    register,
    unflatten,
)
from .model import TrainedModel, resolve_device, to_tensors
from .objective import BATCH_SIZE, Objective
from .options import TrainingOptions

#: dtype of the parameters of non-convex models.
DEEP_DTYPE = torch.float32

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "tanh": torch.tanh,
}


def _pos_int(name: str, v: Any, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"'{name}' must be an integer >= {lo}, got {v!r}")
    return int(v)


def _int_list(name: str, v: Any, allow_empty: bool) -> list[int]:
    if not isinstance(v, list | tuple) or (not v and not allow_empty):
        raise ValueError(f"'{name}' must be a list of positive integers, got {v!r}")
    return [_pos_int(f"{name}[{i}]", x) for i, x in enumerate(v)]


def _check_extra(kind: str, architecture: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(architecture) - allowed - {"kind"})
    if extra:
        raise ValueError(
            f"architecture '{kind}' has unknown options {extra}; allowed: {sorted(allowed)}"
        )


class DeepSpec(ArchitectureSpec):
    """Base of the non-convex entries: adds parameter initialisation."""

    convex = False
    has_head = True

    def init_params(
        self, shapes: ParamShapes, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """PyTorch-default-like initialisation, seeded: U(−1/√fan_in, 1/√fan_in) for weights
        and biases (fan_in of the layer's weight), N(0, 1) for embeddings."""
        out: dict[str, torch.Tensor] = {}
        for name, shape in shapes.items():
            layer = name.rsplit(".", 1)[0]
            if layer == "embed":
                out[name] = torch.randn(shape, generator=generator, dtype=DEEP_DTYPE)
                continue
            if layer == "lstm":
                fan_in = shape[0] // 4  # nn.LSTM: U(−1/√H, 1/√H) for every tensor
            else:
                wshape = shapes[f"{layer}.weight"]
                fan_in = math.prod(wshape[1:])
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            u = torch.rand(shape, generator=generator, dtype=DEEP_DTYPE)
            out[name] = (2.0 * u - 1.0) * bound
        return out

    def features(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        """Input of the linear ``head`` layer, shape (n, F): logits = features Wᵀ + b with
        ``head.weight`` (k_out, F) and ``head.bias`` (k_out,)."""
        raise NotImplementedError

    def forward(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        h = self.features(architecture, params, X)
        return F.linear(h, params["head.weight"], params["head.bias"])


class MLP(DeepSpec):
    """Fully connected net: ``{"kind": "mlp", "hidden": [64], "activation": "relu"}``.

    Layers ``fc1 … fcL`` (one per hidden width) and ``head``; X (n, d) → logits (n, k_out).
    """

    kind = "mlp"

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        _check_extra(self.kind, architecture, {"hidden", "activation"})
        hidden = _int_list("hidden", architecture.get("hidden", [64]), allow_empty=True)
        act = architecture.get("activation", "relu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"'activation' must be one of {sorted(_ACTIVATIONS)}, got {act!r}")
        return {"kind": self.kind, "hidden": hidden, "activation": act}

    def param_shapes(
        self, architecture: Mapping[str, Any], n_features: int, n_classes: int
    ) -> ParamShapes:
        shapes: ParamShapes = {}
        prev = n_features
        for i, h in enumerate(architecture["hidden"], start=1):
            shapes[f"fc{i}.weight"] = (h, prev)
            shapes[f"fc{i}.bias"] = (h,)
            prev = h
        k = n_outputs(n_classes)
        shapes["head.weight"] = (k, prev)
        shapes["head.bias"] = (k,)
        return shapes

    def features(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        act = _ACTIVATIONS[architecture["activation"]]
        h = X
        for i in range(1, len(architecture["hidden"]) + 1):
            h = act(F.linear(h, params[f"fc{i}.weight"], params[f"fc{i}.bias"]))
        return h


class CNN(DeepSpec):
    """Small VGG-style net: ``{"kind": "cnn", "channels": [16, 32], "convs_per_block": 1}``.

    Per entry of ``channels`` a block of ``convs_per_block`` × (conv 3×3, padding 1, ReLU) and a
    2×2 max-pool; then a linear ``head`` on the flattened feature map. Conv layers are named
    ``conv1, conv2, …`` in order. ``input_shape`` [C, H, W] (rows of X are flattened images).
    """

    kind = "cnn"

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        _check_extra(self.kind, architecture, {"channels", "convs_per_block", "input_shape"})
        out: dict[str, Any] = {
            "kind": self.kind,
            "channels": _int_list("channels", architecture.get("channels", [16, 32]), False),
            "convs_per_block": _pos_int("convs_per_block", architecture.get("convs_per_block", 1)),
        }
        if architecture.get("input_shape") is not None:
            shape = _int_list("input_shape", architecture["input_shape"], False)
            if len(shape) != 3:
                raise ValueError(f"'input_shape' must be [C, H, W], got {shape}")
            out["input_shape"] = shape
        return out

    def _feature_size(self, architecture: Mapping[str, Any]) -> tuple[int, int, int]:
        c, h, w = architecture["input_shape"]
        for ch in architecture["channels"]:
            if h < 2 or w < 2:
                raise ValueError(
                    f"input_shape {architecture['input_shape']} is too small for "
                    f"{len(architecture['channels'])} pooling blocks"
                )
            c, h, w = ch, h // 2, w // 2
        return c, h, w

    def param_shapes(
        self, architecture: Mapping[str, Any], n_features: int, n_classes: int
    ) -> ParamShapes:
        if "input_shape" not in architecture:
            raise ValueError(
                "cnn needs 'input_shape' [C, H, W]; training sets it from image-shaped data "
                "(n, C, H, W) / (n, H, W), or pass it in the architecture"
            )
        if math.prod(architecture["input_shape"]) != n_features:
            raise ValueError(
                f"input_shape {architecture['input_shape']} does not match {n_features} features"
            )
        shapes: ParamShapes = {}
        prev = architecture["input_shape"][0]
        j = 0
        for ch in architecture["channels"]:
            for _ in range(architecture["convs_per_block"]):
                j += 1
                shapes[f"conv{j}.weight"] = (ch, prev, 3, 3)
                shapes[f"conv{j}.bias"] = (ch,)
                prev = ch
        c, h, w = self._feature_size(architecture)
        k = n_outputs(n_classes)
        shapes["head.weight"] = (k, c * h * w)
        shapes["head.bias"] = (k,)
        return shapes

    def features(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        h = X.reshape(X.shape[0], *architecture["input_shape"])
        j = 0
        for _ in architecture["channels"]:
            for _ in range(architecture["convs_per_block"]):
                j += 1
                h = F.relu(
                    F.conv2d(h, params[f"conv{j}.weight"], params[f"conv{j}.bias"], padding=1)
                )
            h = F.max_pool2d(h, 2)
        return h.reshape(h.shape[0], -1)


class CharLSTM(DeepSpec):
    """Character language model:
    ``{"kind": "char_lstm", "hidden": 256, "layers": 2, "embedding": 32, "window": 32}``.

    X (n, T): windows of character indices (as numbers); y (n,): the next character. Layers:
    ``embed`` (V, E), ``lstm`` (``weight_ih_l{k}`` (4H, in), ``weight_hh_l{k}`` (4H, H),
    ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H,), gate order i, f, g, o as in ``nn.LSTM``), ``head``
    (V, H) on the last hidden state. V = n_classes. Sequences of any length T' ≥ 1 are accepted
    (used for contexts shorter than the window when completing text).
    """

    kind = "char_lstm"

    def normalize(self, architecture: Mapping[str, Any]) -> dict[str, Any]:
        _check_extra(
            self.kind, architecture, {"hidden", "layers", "embedding", "window", "vocabulary"}
        )
        out: dict[str, Any] = {
            "kind": self.kind,
            "hidden": _pos_int("hidden", architecture.get("hidden", 256)),
            "layers": _pos_int("layers", architecture.get("layers", 2)),
            "embedding": _pos_int("embedding", architecture.get("embedding", 32)),
            "window": _pos_int("window", architecture.get("window", 32)),
        }
        vocab = architecture.get("vocabulary")
        if vocab is not None:
            if not isinstance(vocab, str) or len(set(vocab)) != len(vocab) or len(vocab) < 2:
                raise ValueError("'vocabulary' must be a string of >= 2 distinct characters")
            out["vocabulary"] = vocab
        return out

    def param_shapes(
        self, architecture: Mapping[str, Any], n_features: int, n_classes: int
    ) -> ParamShapes:
        vocab = architecture.get("vocabulary")
        if vocab is not None and len(vocab) != n_classes:
            raise ValueError(f"vocabulary has {len(vocab)} characters but n_classes={n_classes}")
        H, E = architecture["hidden"], architecture["embedding"]
        shapes: ParamShapes = {"embed.weight": (n_classes, E)}
        prev = E
        for k in range(architecture["layers"]):
            shapes[f"lstm.weight_ih_l{k}"] = (4 * H, prev)
            shapes[f"lstm.weight_hh_l{k}"] = (4 * H, H)
            shapes[f"lstm.bias_ih_l{k}"] = (4 * H,)
            shapes[f"lstm.bias_hh_l{k}"] = (4 * H,)
            prev = H
        shapes["head.weight"] = (n_classes, H)
        shapes["head.bias"] = (n_classes,)
        return shapes

    def features(
        self, architecture: Mapping[str, Any], params: Mapping[str, torch.Tensor], X: torch.Tensor
    ) -> torch.Tensor:
        idx = X.round().long()
        inp = F.embedding(idx, params["embed.weight"])  # (n, T, E)
        n, T = idx.shape
        H = architecture["hidden"]
        h = inp.new_zeros(n, H)
        for k in range(architecture["layers"]):
            w_hh = params[f"lstm.weight_hh_l{k}"]
            xs = F.linear(
                inp,
                params[f"lstm.weight_ih_l{k}"],
                params[f"lstm.bias_ih_l{k}"] + params[f"lstm.bias_hh_l{k}"],
            )  # (n, T, 4H)
            h = inp.new_zeros(n, H)
            c = inp.new_zeros(n, H)
            outs = []
            for t in range(T):
                gates = xs[:, t] + F.linear(h, w_hh)
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                if k + 1 < architecture["layers"]:
                    outs.append(h)
            if k + 1 < architecture["layers"]:
                inp = torch.stack(outs, dim=1)
        return h

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)


MLP_SPEC = register(MLP())
CNN_SPEC = register(CNN())
CHAR_LSTM_SPEC = register(CharLSTM())


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of training; restores the previous setting."""
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


def image_input_shape(X: np.ndarray, architecture: Mapping[str, Any]) -> tuple[int, ...]:
    """Input shape [C, H, W] of a cnn: from X (n, C, H, W) or (n, H, W) (C = 1), else from the
    architecture's ``input_shape``, else inferred from (n, d): d = s² → (1, s, s),
    d = 3s² → (3, s, s). ValueError when none applies."""
    if X.ndim == 4:
        return tuple(int(v) for v in X.shape[1:])
    if X.ndim == 3:
        return (1, int(X.shape[1]), int(X.shape[2]))
    if architecture.get("input_shape") is not None:
        return tuple(architecture["input_shape"])
    d = int(X.shape[1])
    for c in (1, 3):
        s = math.isqrt(d // c)
        if d % c == 0 and c * s * s == d:
            return (c, s, s)
    raise ValueError(
        f"cannot infer the image shape of {d} features; pass X as (n, C, H, W) or set "
        "'input_shape' [C, H, W] in the architecture"
    )


def train_deep(
    architecture: dict, X: np.ndarray, y: np.ndarray, n_classes: int, options: TrainingOptions
) -> tuple[TrainedModel, dict]:
    """Train a non-convex catalogue model by minibatch Adam/SGD, deterministically from
    ``options.seed`` (seeded initialisation, seeded shuffling, deterministic kernels).

    X: (n, d) float rows; for ``cnn`` also (n, C, H, W) or (n, H, W) images (flattened here and
    ``input_shape`` recorded in the returned architecture). y: (n,) int in [0, n_classes).
    Minimises the mean (1/n)·L(θ; D), L = Σ ℓ + (λ/2)‖θ‖², for ``options.epochs`` epochs.

    Returns the model (CPU float32 params) and metrics {"loss": L(θ; D) (sum objective),
    "mean_loss": mean ℓ, "grad_norm": ‖∇L(θ; D)‖₂ (full batch, sum convention),
    "train_accuracy", "epochs", "steps", "epoch_losses" (mean minibatch objective per epoch),
    "optimizer", "solver" (= optimizer), "converged" (None: no optimality criterion),
    "wall_time_s"}.
    """
    start = time.perf_counter()
    spec = get_spec(architecture)
    if spec.convex or not isinstance(spec, DeepSpec):
        raise ValueError(f"train_deep trains non-convex kinds, got '{spec.kind}'")
    arch = spec.normalize(architecture)
    Xa = np.asarray(X)
    if Xa.ndim < 2 or Xa.shape[0] == 0:
        raise ValueError(f"X must have shape (n, d) with n >= 1, got {Xa.shape}")
    if spec.kind == "cnn":
        arch["input_shape"] = list(image_input_shape(Xa, arch))
        Xa = Xa.reshape(Xa.shape[0], -1)
    if Xa.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {Xa.shape}")
    n, d = Xa.shape
    shapes = param_shapes(arch, d, n_classes)
    device = resolve_device(options.device)
    Xt, yt = to_tensors(Xa, y, d, n_classes, device, DEEP_DTYPE)
    obj = Objective(spec, arch, shapes, options.l2)
    with _deterministic():
        torch.manual_seed(options.seed)
        gen = torch.Generator(device="cpu").manual_seed(options.seed)
        init = spec.init_params(shapes, gen)
        theta = flatten(init, shapes).to(device).requires_grad_(True)
        if options.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam([theta], lr=options.lr)
        else:
            opt = torch.optim.SGD([theta], lr=options.lr, momentum=0.9)
        decay = 0.5 * options.l2 / n
        bs = options.batch_size
        epoch_losses: list[float] = []
        steps = 0
        for _ in range(options.epochs):
            order = torch.randperm(n, generator=gen).to(device)
            total, count = 0.0, 0
            for s in range(0, n, bs):
                idx = order[s : s + bs]
                opt.zero_grad(set_to_none=True)
                loss = obj.losses(theta, Xt[idx], yt[idx]).mean() + decay * theta.dot(theta)
                loss.backward()
                opt.step()
                steps += 1
                total += float(loss.detach()) * idx.shape[0]
                count += idx.shape[0]
            epoch_losses.append(total / count)
            if not math.isfinite(epoch_losses[-1]):
                raise ValueError(
                    "training diverged (non-finite loss); lower 'lr' or change 'optimizer'"
                )
    theta = theta.detach()
    loss_sum, g = obj.value_and_grad(theta, Xt, yt)
    with torch.no_grad():
        mean_loss = (
            sum(
                float(obj.losses(theta, Xt[s : s + BATCH_SIZE], yt[s : s + BATCH_SIZE]).sum())
                for s in range(0, n, BATCH_SIZE)
            )
            / n
        )
        acc = _accuracy(obj, theta, Xt, yt)
    params = {
        k: v.detach().to("cpu").contiguous().clone() for k, v in unflatten(theta, shapes).items()
    }
    model = TrainedModel(arch, params, d, int(n_classes), options.l2, options.to_dict())
    metrics: dict[str, Any] = {
        "loss": float(loss_sum),
        "mean_loss": mean_loss,
        "grad_norm": float(g.norm()),
        "train_accuracy": acc,
        "epochs": options.epochs,
        "steps": steps,
        "epoch_losses": epoch_losses,
        "optimizer": options.optimizer,
        "solver": options.optimizer,
        "converged": None,
        "wall_time_s": time.perf_counter() - start,
    }
    return model, metrics


def _accuracy(obj: Objective, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    correct = 0
    for s in range(0, X.shape[0], BATCH_SIZE):
        probs = obj.spec.probabilities(obj.logits(theta, X[s : s + BATCH_SIZE]))
        correct += int((probs.argmax(dim=1) == y[s : s + BATCH_SIZE]).sum())
    return correct / max(1, X.shape[0])
