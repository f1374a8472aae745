"""Numerical core of unlearnd: training, unlearning updates, evaluation and serialisation.

Objective (SUM convention): L(θ; D) = Σ_{z∈D} ℓ(z, θ) + (λ/2)‖θ‖², bias regularised too.
This package imports no web, queue or database framework.
"""

from .architectures import (
    CATALOGUE,
    ArchitectureSpec,
    parameter_count,
    register,
    supported_kinds,
    validate_architecture,
)
from .deep import train_deep  # registers the non-convex entries (mlp, cnn, char_lstm)
from .evaluation import evaluate, predict_proba
from .factorization import Factorization, build_factorization
from .model import TrainedModel
from .options import TrainingOptions, UnlearnOptions
from .serialization import model_from_safetensors, model_to_safetensors
from .solvers import conjugate_gradient, lissa
from .training import train
from .updates import UpdateResult, build_block_factorization, unlearn

__all__ = [
    "CATALOGUE",
    "ArchitectureSpec",
    "Factorization",
    "TrainedModel",
    "TrainingOptions",
    "UnlearnOptions",
    "UpdateResult",
    "build_block_factorization",
    "build_factorization",
    "conjugate_gradient",
    "evaluate",
    "lissa",
    "model_from_safetensors",
    "model_to_safetensors",
    "parameter_count",
    "predict_proba",
    "register",
    "supported_kinds",
    "train",
    "train_deep",
    "unlearn",
    "validate_architecture",
]
