"""Tenant-scoped lookups that raise the right problem, cursor pagination, dataset loading."""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets import TabularData, load_stored
from app.errors import BadRequest, NotFound
from app.orm import Dataset, DatasetVersion, Model, ModelVersion
from app.settings import get_settings
from models_store import ArtifactNotFound, get_store


def store():  # type: ignore[no-untyped-def]
    return get_store(str(get_settings().artifacts_dir))


def model_or_404(session: Session, tenant: str, name: str) -> Model:
    model = session.scalar(select(Model).where(Model.tenant == tenant, Model.name == name))
    if model is None:
        raise NotFound(f"No model named '{name}'. List models with GET /v1/models.")
    return model


def dataset_or_404(session: Session, tenant: str, dataset_id: str) -> Dataset:
    ds = session.get(Dataset, dataset_id)
    if ds is None or ds.tenant != tenant:
        raise NotFound(f"No dataset with id '{dataset_id}'. Upload one with POST /v1/datasets.")
    return ds


def version_or_404(session: Session, model: Model, version: int) -> ModelVersion:
    mv = session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == version
        )
    )
    if mv is None:
        latest = model.current_version
        hint = f"latest is {latest}" if latest else "training has not finished yet"
        raise NotFound(f"Model '{model.name}' has no version {version} ({hint}).")
    return mv


def current_dataset_version(session: Session, ds: Dataset) -> DatasetVersion:
    dv = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.dataset_id == ds.id, DatasetVersion.version == ds.current_version
        )
    )
    assert dv is not None, "a dataset always has its current version"
    return dv


@lru_cache(maxsize=4)
def load_dataset(sha256: str) -> TabularData:
    """Load a stored dataset version (cached per process by content hash)."""
    try:
        return load_stored(store().get(sha256))
    except ArtifactNotFound as exc:
        raise NotFound("This dataset version was erased from the store.") from exc


@lru_cache(maxsize=2)
def load_corpus(sha256: str) -> str:
    """The text of a stored corpus version (cached per process by content hash)."""
    try:
        return store().get(sha256).decode("utf-8")
    except ArtifactNotFound as exc:
        raise NotFound("This dataset version was erased from the store.") from exc


def encode_cursor(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError
        return value
    except (ValueError, json.JSONDecodeError) as exc:
        raise BadRequest(
            "The cursor is malformed; pass back the 'next_cursor' of the previous page."
        ) from exc


def cursor_int(position: dict[str, Any] | None, key: str) -> int | None:
    """An integer position of a cursor, or a 400 for a tampered one."""
    if position is None:
        return None
    try:
        return int(position.get(key, 0))
    except (TypeError, ValueError) as exc:
        raise BadRequest(
            "The cursor is malformed; pass back the 'next_cursor' of the previous page."
        ) from exc
