"""What happens around a job's end that does not need the numerical stack (no torch here):
audit events for failed or canceled requests, redaction of request payloads, and erasure of
superseded dataset versions."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import append_event, pseudonym
from app.db import session_scope
from app.orm import Dataset, DatasetVersion, Job, Model, UnlearningRequest, utcnow
from app.settings import get_settings
from models_store import get_store

log = logging.getLogger("unlearnd.worker")


def redacted_payload(secret_key: bytes, payload: dict[str, Any]) -> dict[str, Any]:
    """The request payload with ids replaced by keyed hashes and new values dropped."""
    out: dict[str, Any] = {"redacted": True}
    ids = list(payload.get("record_ids") or [])
    ids += [c["record_id"] for c in payload.get("corrections") or []]
    if ids:
        out["record_hashes"] = sorted({pseudonym(secret_key, "record", r) for r in ids})
    if payload.get("subject_id"):
        out["subject_hash"] = pseudonym(secret_key, "subject", payload["subject_id"])
    if payload.get("features"):
        out["n_features"] = len(payload["features"])
    return out


def on_job_ended(session: Session, job: Job) -> None:
    """Record a failed or canceled unlearning job in its request and the audit log."""
    if job.kind != "unlearn" or job.status == "succeeded":
        return
    secret = get_settings().resolved_secret_key()
    req = session.scalar(select(UnlearningRequest).where(UnlearningRequest.job_id == job.id))
    model = session.get(Model, job.model_id)
    if req is None or model is None:
        return
    subject = req.payload.get("subject_id")
    req.payload = redacted_payload(secret, req.payload)  # nothing personal outlives the request
    append_event(
        session,
        secret,
        tenant=job.tenant,
        type=f"request.{job.status}",
        model=model.name,
        request_id=req.id,
        job_id=job.id,
        subject_ids=[subject] if subject else [],
        data={"kind": req.kind, "reason": (job.error or {}).get("detail")},
    )


def purge_superseded_datasets() -> int:
    """Erase the stored bytes of every dataset version older than its dataset's current one
    (they hold records that were since erased or rectified). Returns how many were purged."""
    settings = get_settings()
    store = get_store(str(settings.artifacts_dir))
    purged = 0
    with session_scope() as s:
        stale = (
            s.execute(
                select(DatasetVersion)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(DatasetVersion.version < Dataset.current_version)
                .where(DatasetVersion.purged_at.is_(None))
            )
            .scalars()
            .all()
        )
        for dv in stale:
            still_used = s.scalar(
                select(DatasetVersion.id)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(DatasetVersion.sha256 == dv.sha256, DatasetVersion.id != dv.id)
                .where(DatasetVersion.version == Dataset.current_version)
                .limit(1)
            )
            if still_used is None:
                store.delete(dv.sha256)
            dv.purged_at = utcnow()
            purged += 1
    return purged
