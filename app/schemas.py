"""Request bodies of the public API (PRODUCT.md section 4). Responses are plain dicts built by
the view functions next to each route, so field names stay exactly those of the contract."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["auto", "first_order", "second_order", "retrain"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_IDS_PER_REQUEST = 100_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class CertificationIn(Strict):
    """Certified removal (convex binary models): objective perturbation with b ~ N(0, σ²I)."""

    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1)
    sigma: float | None = Field(
        default=None, gt=0, description="Noise scale; chosen by the service when omitted."
    )
    capacity: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="When sigma is omitted: how many typical single-record requests one "
        "budget should absorb.",
    )


class ModelCreate(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique per tenant; used in URLs.")
    dataset_id: str
    architecture: dict[str, Any] = Field(examples=[{"kind": "logistic_regression"}])
    training: dict[str, Any] = Field(default_factory=dict, examples=[{"l2": 1e-3, "seed": 0}])
    certification: CertificationIn | None = None


class _RequestBase(Strict):
    model: str = Field(description="Name of the model the request applies to.")
    method: Method = "auto"
    tau: float | None = Field(default=None, gt=0, description="First-order step size override.")
    options: dict[str, Any] | None = Field(
        default=None,
        description="Solver options of the update (unlearning.UnlearnOptions): solver "
        "(auto|exact|cg|lissa), damping, cg_tol, cg_max_iter, preconditioner, cg_precision "
        "(auto|double|mixed), lissa_depth, "
        "lissa_scale, last_k_layers, chunk_size, line_search.",
        examples=[{"solver": "cg", "last_k_layers": 1}],
    )
    requester: str | None = Field(default=None, max_length=200)
    legal_basis: str | None = Field(default=None, max_length=200, examples=["GDPR Art. 17"])
    reference: str | None = Field(default=None, max_length=200)


class DeleteRecords(_RequestBase):
    kind: Literal["delete_records"]
    record_ids: list[str] | None = Field(default=None, max_length=MAX_IDS_PER_REQUEST)
    subject_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _one_selector(self) -> DeleteRecords:
        if (self.record_ids is None) == (self.subject_id is None):
            raise ValueError("give exactly one of 'record_ids' or 'subject_id'")
        if self.record_ids is not None and not self.record_ids:
            raise ValueError("'record_ids' must not be empty")
        return self


class LabelCorrection(Strict):
    record_id: str
    label: int = Field(ge=0)


class CorrectLabels(_RequestBase):
    kind: Literal["correct_labels"]
    corrections: list[LabelCorrection] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class FeatureCorrection(Strict):
    record_id: str
    features: dict[str, float] = Field(min_length=1)

    @field_validator("features")
    @classmethod
    def _finite(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if not math.isfinite(x)]
        if bad:
            raise ValueError(f"feature values must be finite numbers; not finite: {bad}")
        return v


class CorrectFeatures(_RequestBase):
    kind: Literal["correct_features"]
    corrections: list[FeatureCorrection] = Field(min_length=1, max_length=MAX_IDS_PER_REQUEST)


class RemoveFeatures(_RequestBase):
    kind: Literal["remove_features"]
    features: list[str] = Field(min_length=1)


class RectifyText(_RequestBase):
    kind: Literal["rectify_text"]
    find: str = Field(min_length=1)
    replace: str


UnlearningRequestIn = Annotated[
    DeleteRecords | CorrectLabels | CorrectFeatures | RemoveFeatures | RectifyText,
    Field(discriminator="kind"),
]


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[Literal["admin", "submit", "read", "audit"]] = Field(min_length=1)
    tenant: str | None = Field(default=None, pattern=NAME_PATTERN)


class ScoreIn(Strict):
    """Either ``X`` (feature rows, for classifiers) or ``prefix`` with ``texts`` and/or
    ``complete`` (for language models)."""

    X: list[list[float]] | None = Field(default=None, min_length=1, max_length=10_000)
    prefix: str | None = Field(default=None, min_length=1, max_length=10_000)
    texts: list[str] | None = Field(default=None, min_length=1, max_length=10_000)
    complete: int | None = Field(default=None, ge=1, le=1000)

    @model_validator(mode="after")
    def _one_mode(self) -> ScoreIn:
        lm = self.prefix is not None or self.texts is not None or self.complete is not None
        if (self.X is not None) == lm:
            raise ValueError(
                "send either 'X' (feature rows) or 'prefix' with 'texts' and/or 'complete'"
            )
        if lm and (self.prefix is None or (self.texts is None and self.complete is None)):
            raise ValueError("a language-model score needs 'prefix' and 'texts' or 'complete'")
        return self
