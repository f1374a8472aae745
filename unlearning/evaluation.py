"""Prediction and evaluation."""

from __future__ import annotations

import numpy as np
import torch

from .architectures import flatten
from .model import TrainedModel, to_tensors
from .objective import Objective


def _prepare(model: TrainedModel, X: np.ndarray, y: np.ndarray | None):
    obj = Objective.for_model(model)
    dtype = next(iter(model.params.values())).dtype
    Xa = np.asarray(X)
    y_arr = np.zeros(Xa.shape[0] if Xa.ndim else 0, dtype=np.int64) if y is None else y
    Xt, yt = to_tensors(Xa, y_arr, model.n_features, model.n_classes, torch.device("cpu"), dtype)
    theta = flatten(model.params, obj.shapes).to(dtype)
    return obj, theta, Xt, yt


def predict_proba(model: TrainedModel, X: np.ndarray) -> np.ndarray:
    """Class probabilities, float64 array (n, n_classes); rows sum to 1."""
    obj, theta, Xt, _ = _prepare(model, X, None)
    with torch.no_grad():
        return obj.spec.probabilities(obj.logits(theta, Xt)).numpy().astype(np.float64)


def evaluate(model: TrainedModel, X: np.ndarray, y: np.ndarray) -> dict:
    """{"loss": MEAN cross-entropy in nats (per point, no regulariser), "accuracy" in [0, 1]}.

    X (n, d), y (n,) with n ≥ 1.
    """
    obj, theta, Xt, yt = _prepare(model, X, y)
    if Xt.shape[0] == 0:
        raise ValueError("evaluate needs at least one row")
    with torch.no_grad():
        loss = float(obj.losses(theta, Xt, yt).mean())
    return {"loss": loss, "accuracy": obj.accuracy(theta, Xt, yt)}
