"""Unlearning requests (GDPR Art. 16/17, CCPA): validated at the door, run by a worker."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit import append_event, pseudonym
from app.deps import Reader, SessionDep, SettingsDep, Submitter
from app.errors import BadRequest, Conflict, InvalidInput, NotFound
from app.jobs import dispatch, new_job
from app.lookups import current_dataset_version, load_corpus, load_dataset, model_or_404
from app.orm import Dataset, Job, Model, UnlearningRequest, utcnow
from app.schemas import (
    CorrectFeatures,
    CorrectLabels,
    DeleteRecords,
    RectifyText,
    RemoveFeatures,
    UnlearningRequestIn,
)

router = APIRouter(prefix="/v1/requests", tags=["requests"])

MAX_NAMED = 20


def _unknown(ids: list[str], what: str = "record ids") -> InvalidInput:
    shown = ids[:MAX_NAMED]
    more = f" (and {len(ids) - MAX_NAMED} more)" if len(ids) > MAX_NAMED else ""
    return InvalidInput(
        f"Unknown {what} in the model's current dataset: {shown}{more}. They were never "
        "uploaded or have been erased already; remove them from the request.",
        unknown=shown,
        n_unknown=len(ids),
    )


def validate_against_dataset(session: SessionDep, model: Model, body: Any) -> dict[str, Any]:
    """Check the request against the current data; return the worker's payload."""
    ds = session.get(Dataset, model.dataset_id)
    assert ds is not None
    payload: dict[str, Any] = {"method": body.method}
    if body.tau is not None:
        payload["tau"] = body.tau
    if body.options:
        payload["options"] = _validated_options(body.options, body.tau)
    if ds.kind == "text":
        if not isinstance(body, RectifyText):
            raise InvalidInput(
                f"Model '{model.name}' is a language model on a text corpus: it takes "
                "rectify_text (find/replace), not record-level requests."
            )
        text = load_corpus(current_dataset_version(session, ds).sha256)
        if body.find not in text:
            raise InvalidInput(
                "The string does not occur in the model's current corpus (never there, or "
                "rectified already); check 'find'."
            )
        payload.update(find=body.find, replace=body.replace)
        return payload
    if isinstance(body, RectifyText):
        raise InvalidInput(
            "rectify_text applies to text corpora and language models; tabular models take "
            "delete_records, correct_labels, correct_features or remove_features."
        )
    data = load_dataset(current_dataset_version(session, ds).sha256)
    if isinstance(body, DeleteRecords):
        if body.subject_id is not None:
            if body.subject_id not in data.rows_of_subject:
                raise InvalidInput(
                    "No records of this subject in the model's current dataset (never "
                    "uploaded, or erased already).",
                    n_unknown=1,
                )
            payload["subject_id"] = body.subject_id
        else:
            ids = list(dict.fromkeys(body.record_ids or []))
            unknown = [r for r in ids if r not in data.row_of]
            if unknown:
                raise _unknown(unknown)
            payload["record_ids"] = ids
    elif isinstance(body, CorrectLabels):
        ids = [c.record_id for c in body.corrections]
        if len(set(ids)) != len(ids):
            raise InvalidInput("Each record may be corrected once per request; ids repeat.")
        unknown = [r for r in ids if r not in data.row_of]
        if unknown:
            raise _unknown(unknown)
        bad = [c.label for c in body.corrections if c.label >= data.n_classes]
        if bad:
            raise InvalidInput(
                f"Labels must be class indices 0..{data.n_classes - 1}; got {bad[:MAX_NAMED]}."
            )
        payload["corrections"] = [c.model_dump() for c in body.corrections]
    elif isinstance(body, CorrectFeatures):
        ids = [c.record_id for c in body.corrections]
        if len(set(ids)) != len(ids):
            raise InvalidInput("Each record may be corrected once per request; ids repeat.")
        unknown = [r for r in ids if r not in data.row_of]
        if unknown:
            raise _unknown(unknown)
        names = set(data.feature_names.tolist())
        bad_names = sorted({f for c in body.corrections for f in c.features} - names)
        if bad_names:
            raise InvalidInput(
                f"Unknown feature names: {bad_names[:MAX_NAMED]}.",
                unknown_features=bad_names[:MAX_NAMED],
            )
        payload["corrections"] = [c.model_dump() for c in body.corrections]
    elif isinstance(body, RemoveFeatures):
        names = set(data.feature_names.tolist())
        bad_names = sorted(set(body.features) - names)
        if bad_names:
            raise InvalidInput(
                f"Unknown feature names: {bad_names[:MAX_NAMED]}.",
                unknown_features=bad_names[:MAX_NAMED],
            )
        payload["features"] = list(dict.fromkeys(body.features))
    return payload


def _validated_options(options: dict[str, Any], tau: float | None) -> dict[str, Any]:
    from unlearning import UnlearnOptions

    reserved = sorted({"method", "device", "exact_max_params"} & set(options))
    if reserved:
        raise InvalidInput(
            f"'options' must not set {reserved}: the method is the request's 'method' field, "
            "the device and the dense-Hessian limit are the service's."
        )
    try:
        UnlearnOptions.from_dict({**options, **({"tau": tau} if tau is not None else {})})
    except ValueError as exc:
        raise InvalidInput(f"Invalid 'options': {exc}") from exc
    return dict(options)


def request_view(req: UnlearningRequest, job: Job, model: Model) -> dict[str, Any]:
    return {
        "id": req.id,
        "model": model.name,
        "kind": req.kind,
        "method": req.method,
        "status": job.status,
        "job_id": job.id,
        "requester": req.requester,
        "legal_basis": req.legal_basis,
        "reference": req.reference,
        "created_at": req.created_at,
        "result": job.result,
        "error": job.error,
    }


@router.post("", status_code=202)
def submit_request(
    principal: Submitter,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    body: Annotated[UnlearningRequestIn, Body()],
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> dict[str, Any]:
    """Submit an unlearning request; poll ``Location`` (the job) until it ends."""
    if not idempotency_key or len(idempotency_key) > 200:
        raise BadRequest(
            "Send an 'Idempotency-Key' header (1-200 characters, e.g. a UUID) so that a retried "
            "submission is not applied twice."
        )
    body_sha = hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    existing = _existing(session, principal.tenant, idempotency_key, body_sha)
    if existing is not None:
        response.headers["Location"] = f"/v1/jobs/{existing['job_id']}"
        return existing
    model = model_or_404(session, principal.tenant, body.model)
    payload = validate_against_dataset(session, model, body)
    job = new_job(session, tenant=principal.tenant, kind="unlearn", model_id=model.id)
    req = UnlearningRequest(
        tenant=principal.tenant,
        model_id=model.id,
        job_id=job.id,
        kind=body.kind,
        method=body.method,
        idempotency_key=idempotency_key,
        body_sha256=body_sha,
        requester=body.requester,
        legal_basis=body.legal_basis,
        reference=body.reference,
        payload=payload,
        created_at=utcnow(),
    )
    session.add(req)
    session.flush()
    job.payload = {"request_id": req.id}
    append_event(
        session,
        settings.resolved_secret_key(),
        tenant=principal.tenant,
        type="request.received",
        model=model.name,
        request_id=req.id,
        job_id=job.id,
        subject_ids=[payload["subject_id"]] if "subject_id" in payload else [],
        record_ids=payload.get("record_ids", [])
        + [c["record_id"] for c in payload.get("corrections", [])],
        data={
            "kind": req.kind,
            "method": req.method,
            # free text that may identify people: keyed hashes only, like record ids
            "requester_hash": _keyed(settings, "requester", req.requester),
            "reference_hash": _keyed(settings, "reference", req.reference),
            "legal_basis": req.legal_basis,
        },
    )
    try:
        session.commit()
    except IntegrityError:  # a concurrent submission with the same key won the race
        session.rollback()
        existing = _existing(session, principal.tenant, idempotency_key, body_sha)
        if existing is None:
            raise
        response.headers["Location"] = f"/v1/jobs/{existing['job_id']}"
        return existing
    dispatch([job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return {"id": req.id, "job_id": job.id, "status": job.status}


def _keyed(settings: SettingsDep, kind: str, value: str | None) -> str | None:
    return None if value is None else pseudonym(settings.resolved_secret_key(), kind, value)


def _existing(session: SessionDep, tenant: str, key: str, body_sha: str) -> dict[str, Any] | None:
    req = session.scalar(
        select(UnlearningRequest).where(
            UnlearningRequest.tenant == tenant, UnlearningRequest.idempotency_key == key
        )
    )
    if req is None:
        return None
    if req.body_sha256 != body_sha:
        raise Conflict(
            "This Idempotency-Key was already used with a different request body; use a new "
            "key for a new request.",
            request_id=req.id,
        )
    job = session.get(Job, req.job_id)
    assert job is not None
    return {"id": req.id, "job_id": job.id, "status": job.status}


@router.get("/{request_id}")
def get_request(request_id: str, principal: Reader, session: SessionDep) -> dict[str, Any]:
    req = session.get(UnlearningRequest, request_id)
    if req is None or req.tenant != principal.tenant:
        raise NotFound(f"No request with id '{request_id}'.")
    job = session.get(Job, req.job_id)
    model = session.get(Model, req.model_id)
    assert job is not None and model is not None
    return request_view(req, job, model)
