"""Datasets: upload (``.npz``) and cards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from sqlalchemy import select

from app.audit import append_event
from app.datasets import parse_npz, parse_text
from app.deps import Reader, SessionDep, SettingsDep, Submitter
from app.errors import PayloadTooLarge
from app.lookups import dataset_or_404, decode_cursor, encode_cursor, store
from app.orm import Dataset, DatasetVersion, utcnow
from app.schemas import NAME_PATTERN

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def dataset_card(ds: Dataset, dv: DatasetVersion) -> dict[str, Any]:
    return {
        "id": ds.id,
        "name": ds.name,
        "kind": ds.kind,
        "version": dv.version,
        "n_records": dv.n_records,
        "n_features": dv.n_features,
        "n_classes": dv.n_classes,
        "sha256": dv.sha256,
        "size_bytes": dv.size_bytes,
        "created_at": ds.created_at,
        "updated_at": dv.created_at,
    }


@router.post("", status_code=201)
def upload_dataset(
    principal: Submitter,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    file: Annotated[
        UploadFile, File(description=".npz with X, y, record_ids[, subject_ids, feature_names]")
    ],
    name: Annotated[str, Form(pattern=NAME_PATTERN)],
    kind: Annotated[Literal["tabular", "text"], Form()] = "tabular",
) -> dict[str, Any]:
    """Upload version 1 of a dataset: a tabular ``.npz`` (arrays loaded with
    ``allow_pickle=False``) or, with ``kind=text``, a UTF-8 text corpus (``n_records`` counts
    its characters, ``n_classes`` its distinct characters)."""
    # a plain def: FastAPI runs it in a worker thread, so parsing and fsync never block the loop
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"The upload exceeds {settings.max_upload_bytes} bytes (UNLEARND_MAX_UPLOAD_BYTES)."
        )
    if kind == "text":
        corpus = parse_text(data)
        canonical = corpus.to_bytes()
        n_records, n_features, n_classes = corpus.n_chars, 0, corpus.vocabulary_size
    else:
        table = parse_npz(data)
        canonical = table.to_npz_bytes()
        n_records, n_features, n_classes = table.n_records, table.n_features, table.n_classes
    sha = store().put(canonical)
    ds = Dataset(
        tenant=principal.tenant, name=name, kind=kind, current_version=1, created_at=utcnow()
    )
    session.add(ds)
    session.flush()
    dv = DatasetVersion(
        dataset_id=ds.id,
        version=1,
        parent_version=None,
        n_records=n_records,
        n_features=n_features,
        n_classes=n_classes,
        sha256=sha,
        size_bytes=len(canonical),
        created_at=utcnow(),
    )
    session.add(dv)
    append_event(
        session,
        settings.resolved_secret_key(),
        tenant=principal.tenant,
        type="dataset.uploaded",
        data={"dataset_id": ds.id, "version": 1, "n_records": n_records, "sha256": sha},
    )
    session.commit()
    # identical bytes may belong to a superseded version purged between put and commit
    store().put(canonical)
    response.headers["Location"] = f"/v1/datasets/{ds.id}"
    return dataset_card(ds, dv)


@router.get("")
def list_datasets(
    principal: Reader,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    pos = decode_cursor(cursor)
    q = (
        select(Dataset, DatasetVersion)
        .join(
            DatasetVersion,
            (DatasetVersion.dataset_id == Dataset.id)
            & (DatasetVersion.version == Dataset.current_version),
        )
        .where(Dataset.tenant == principal.tenant)
    )
    if pos:
        q = q.where(Dataset.id > str(pos.get("id", "")))
    rows = session.execute(q.order_by(Dataset.id).limit(limit + 1)).all()
    items = [dataset_card(ds, dv) for ds, dv in rows[:limit]]
    nxt = encode_cursor({"id": rows[limit - 1][0].id}) if len(rows) > limit else None
    return {"items": items, "next_cursor": nxt}


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, principal: Reader, session: SessionDep) -> dict[str, Any]:
    ds = dataset_or_404(session, principal.tenant, dataset_id)
    versions = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == ds.id)
        .order_by(DatasetVersion.version)
    ).all()
    card = dataset_card(ds, versions[-1])
    card["versions"] = [
        {
            "version": v.version,
            "n_records": v.n_records,
            "sha256": v.sha256,
            "job_id": v.job_id,
            "created_at": v.created_at,
            "purged": v.purged_at is not None,
        }
        for v in versions
    ]
    return card
