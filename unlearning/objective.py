"""The training objective L(θ; D) = Σ_{z∈D} ℓ(z, θ) + (λ/2)‖θ‖² (+ bᵀθ for certified models)
(SUM convention, bias included in the regulariser), as a function of the flat parameter vector
θ (p,). The perturbation b enters values and gradients, not Hessians nor per-sample gradients.

All functions take X (n, d) in the objective's dtype and y (n,) int64 on the same device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import grad, vmap

from .architectures import ArchitectureSpec, ParamShapes, get_spec, unflatten
from .model import TrainedModel

#: Rows per batch for gradients and per-sample gradients (bounds peak memory).
BATCH_SIZE = 8192


@dataclass(frozen=True)
class Objective:
    """The objective of one architecture, problem size and λ."""

    spec: ArchitectureSpec
    architecture: Mapping[str, Any]
    shapes: ParamShapes
    l2: float
    #: objective perturbation b (p,) of certified models: L gains the linear term bᵀθ
    noise: torch.Tensor | None = None

    @classmethod
    def for_model(cls, model: TrainedModel) -> Objective:
        """Objective that ``model`` was trained on."""
        spec = get_spec(model.architecture)
        arch = spec.normalize(model.architecture)
        return cls(spec, arch, model.shapes(), float(model.l2), model.noise)

    @property
    def n_params(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes.values())

    def logits(self, theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """Logits (n, k_out)."""
        return self.spec.forward(self.architecture, unflatten(theta, self.shapes), X)

    def losses(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample losses ℓ(z, θ), shape (n,)."""
        return self.spec.losses(self.logits(theta, X), y)

    def data_loss(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_z ℓ(z, θ) (scalar, differentiable, not batched)."""
        return self.losses(theta, X, y).sum()

    def value(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L(θ; D) (scalar, differentiable, not batched)."""
        out = self.data_loss(theta, X, y) + 0.5 * self.l2 * theta.dot(theta)
        if self.noise is not None:
            out = out + self.noise.to(theta).dot(theta)
        return out

    def value_and_grad(
        self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> tuple[float, torch.Tensor]:
        """L(θ; D) as a float and ∇L(θ; D) (p,), accumulated in batches."""
        theta = theta.detach()
        total = 0.5 * self.l2 * float(theta.dot(theta))
        g = self.l2 * theta.clone()
        if self.noise is not None:
            b = self.noise.to(theta)
            total += float(b.dot(theta))
            g += b
        for s in range(0, X.shape[0], BATCH_SIZE):
            th = theta.clone().requires_grad_(True)
            f = self.data_loss(th, X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE])
            (gb,) = torch.autograd.grad(f, th)
            total += float(f.detach())
            g += gb
        return total, g

    def gradient(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """∇L(θ; D), shape (p,)."""
        return self.value_and_grad(theta, X, y)[1]

    def _sample_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.losses(theta, x.unsqueeze(0), y.unsqueeze(0)).sum()

    def per_sample_grads(
        self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """∇θ ℓ(z_i, θ) for every row, shape (n, p), via torch.func (grad + vmap) in batches."""
        theta = theta.detach()
        f = vmap(grad(self._sample_loss), in_dims=(None, 0, 0))
        parts = [
            f(theta, X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE])
            for s in range(0, X.shape[0], BATCH_SIZE)
        ]
        if not parts:
            return theta.new_zeros(0, theta.shape[0])
        return torch.cat(parts)

    def grad_sum(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Σ_i ∇θ ℓ(z_i, θ) (p,) from per-sample gradients (no regulariser); zeros if n = 0.

        Closed form for logistic regression (∂ℓ/∂z = σ(z) − y or softmax(z) − onehot(y), then
        [Gᵀ X, Σ G]); torch.func ``grad`` + ``vmap`` otherwise (tests compare both).
        """
        theta = theta.detach()
        if self.spec.kind == "logistic_regression" and list(self.shapes) == ["weight", "bias"]:
            with torch.no_grad():
                z = self.logits(theta, X)
                if z.shape[1] == 1:
                    G = torch.sigmoid(z) - y.to(z.dtype).unsqueeze(1)
                else:
                    G = torch.softmax(z, dim=1)
                    G[torch.arange(G.shape[0], device=G.device), y] -= 1.0
                return torch.cat([(G.T @ X).reshape(-1), G.sum(0)])
        total = torch.zeros_like(theta)
        f = vmap(grad(self._sample_loss), in_dims=(None, 0, 0))
        for s in range(0, X.shape[0], BATCH_SIZE):
            total += f(theta, X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE]).sum(0)
        return total

    def hvp(
        self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Hessian-vector product ∇²L(θ; D) v (p,), batched, regulariser included."""
        out = self.l2 * v
        theta = theta.detach()
        for s in range(0, X.shape[0], BATCH_SIZE):
            th = theta.clone().requires_grad_(True)
            f = self.data_loss(th, X[s : s + BATCH_SIZE], y[s : s + BATCH_SIZE])
            (g,) = torch.autograd.grad(f, th, create_graph=True)
            (hv,) = torch.autograd.grad(g, th, grad_outputs=v)
            out = out + hv
        return out.detach()

    def accuracy(self, theta: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of rows whose most probable class equals y."""
        if X.shape[0] == 0:
            return float("nan")
        probs = self.spec.probabilities(self.logits(theta.detach(), X))
        return float((probs.argmax(dim=1) == y).double().mean())
