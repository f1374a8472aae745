"""Models: training (version 1), version history, cards, weights and scoring."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.audit import append_event
from app.deps import Reader, SessionDep, SettingsDep, Submitter
from app.errors import Conflict, InvalidInput
from app.jobs import dispatch, new_job
from app.lookups import (
    current_dataset_version,
    cursor_int,
    dataset_or_404,
    decode_cursor,
    encode_cursor,
    model_or_404,
    store,
    version_or_404,
)
from app.orm import Job, Model, ModelVersion, utcnow
from app.schemas import ModelCreate, ScoreIn

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_view(model: Model) -> dict[str, Any]:
    return {
        "name": model.name,
        "dataset_id": model.dataset_id,
        "architecture": model.architecture,
        "training": model.training,
        "certification": model.certification,
        "current_version": model.current_version,
        "created_at": model.created_at,
    }


def version_card(model: Model, mv: ModelVersion) -> dict[str, Any]:
    return {
        "model": model.name,
        "version": mv.version,
        "parent": mv.parent,
        "job_id": mv.job_id,
        "request_ids": mv.request_ids,
        "dataset_version": mv.dataset_version,
        "sha256": mv.sha256,
        "size_bytes": mv.size_bytes,
        "metrics": mv.metrics,
        "certificate": mv.certificate or {"certified": False, "guarantee": "best effort"},
        "created_at": mv.created_at,
        "weights_url": f"/v1/models/{model.name}/versions/{mv.version}/weights",
    }


@router.post("", status_code=202)
def create_model(
    body: ModelCreate,
    principal: Submitter,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Register a model and queue the training of its version 1."""
    from unlearning import TrainingOptions, parameter_count, validate_architecture

    ds = dataset_or_404(session, principal.tenant, body.dataset_id)
    try:
        architecture = validate_architecture(body.architecture)
        training = TrainingOptions.from_dict(body.training)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    if body.certification is not None and architecture["kind"] not in (
        "logistic_regression",
        "linear_svm",
    ):
        raise InvalidInput(
            "Certified removal ('certification') needs a convex model, logistic_regression or "
            'linear_svm; send "certification": null for a best-effort model.'
        )
    if session.scalar(
        select(Model.id).where(Model.tenant == principal.tenant, Model.name == body.name)
    ):
        raise Conflict(f"A model named '{body.name}' exists already; choose another name.")
    other = session.scalar(select(Model.name).where(Model.dataset_id == ds.id))
    if other is not None:
        raise Conflict(
            f"Dataset '{ds.id}' already backs model '{other}'. An erasure rewrites the dataset "
            "under one model's lineage, so each model needs its own dataset: upload it again."
        )
    dv = current_dataset_version(session, ds)
    if body.certification is not None and (dv.n_classes or 0) != 2:
        raise InvalidInput(
            f"Certified removal is implemented for binary problems; dataset '{ds.id}' has "
            f"{dv.n_classes} classes."
        )
    is_lm = architecture["kind"] == "char_lstm"
    if is_lm != (ds.kind == "text"):
        raise InvalidInput(
            "A char_lstm trains on a text corpus (dataset kind=text)."
            if is_lm
            else f"Dataset '{ds.id}' is a text corpus: it trains a char_lstm language model."
        )
    try:
        n_params = (
            parameter_count(
                architecture, dv.n_features or int(architecture.get("window", 1)), dv.n_classes or 2
            )
            if architecture["kind"] != "cnn" or "input_shape" in architecture
            else None
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    model = Model(
        tenant=principal.tenant,
        name=body.name,
        dataset_id=ds.id,
        architecture=architecture,
        training=training.to_dict(),
        certification=None if body.certification is None else body.certification.model_dump(),
        current_version=None,
        created_at=utcnow(),
    )
    session.add(model)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request took the name first
        session.rollback()
        raise Conflict(f"A model named '{body.name}' exists already; choose another name.") from exc
    job = new_job(session, tenant=principal.tenant, kind="train", model_id=model.id)
    append_event(
        session,
        settings.resolved_secret_key(),
        tenant=principal.tenant,
        type="model.created",
        model=model.name,
        job_id=job.id,
        data={
            "dataset_id": ds.id,
            "dataset_version": dv.version,
            "architecture": architecture,
            "n_parameters": n_params,
        },
    )
    session.commit()
    dispatch([job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return {"model": model.name, "job_id": job.id, "status": job.status}


@router.get("")
def list_models(
    principal: Reader,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    pos = decode_cursor(cursor)
    q = select(Model).where(Model.tenant == principal.tenant)
    if pos:
        q = q.where(Model.name > str(pos.get("name", "")))
    rows = session.scalars(q.order_by(Model.name).limit(limit + 1)).all()
    nxt = encode_cursor({"name": rows[limit - 1].name}) if len(rows) > limit else None
    return {"items": [model_view(m) for m in rows[:limit]], "next_cursor": nxt}


@router.get("/{name}")
def get_model(name: str, principal: Reader, session: SessionDep) -> dict[str, Any]:
    model = model_or_404(session, principal.tenant, name)
    view = model_view(model)
    jobs = session.scalars(
        select(Job)
        .where(Job.model_id == model.id, Job.status.in_(("queued", "running")))
        .order_by(Job.created_at)
    ).all()
    view["pending_jobs"] = [j.id for j in jobs]
    return view


@router.get("/{name}/versions")
def list_versions(
    name: str,
    principal: Reader,
    session: SessionDep,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    model = model_or_404(session, principal.tenant, name)
    pos = decode_cursor(cursor)
    q = select(ModelVersion).where(ModelVersion.model_id == model.id)
    after = cursor_int(pos, "version")
    if after is not None:
        q = q.where(ModelVersion.version > after)
    rows = session.scalars(q.order_by(ModelVersion.version).limit(limit + 1)).all()
    nxt = encode_cursor({"version": rows[limit - 1].version}) if len(rows) > limit else None
    return {"items": [version_card(model, v) for v in rows[:limit]], "next_cursor": nxt}


@router.get("/{name}/versions/{version}")
def get_version(name: str, version: int, principal: Reader, session: SessionDep) -> dict[str, Any]:
    model = model_or_404(session, principal.tenant, name)
    return version_card(model, version_or_404(session, model, version))


@router.get(
    "/{name}/versions/{version}/weights",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "safetensors file"}
    },
)
def get_weights(name: str, version: int, principal: Reader, session: SessionDep) -> Response:
    model = model_or_404(session, principal.tenant, name)
    mv = version_or_404(session, model, version)
    data = store().get(mv.sha256)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{model.name}-v{mv.version}.safetensors"',
            "ETag": f'"{mv.sha256}"',
        },
    )


@router.post("/{name}/versions/{version}/verify", status_code=202)
def verify_version(
    name: str,
    version: int,
    principal: Submitter,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Queue a job that retrains a reference from scratch on the version's data and reports
    parameter distance, prediction agreement and accuracy difference."""
    model = model_or_404(session, principal.tenant, name)
    mv = version_or_404(session, model, version)
    ds = dataset_or_404(session, principal.tenant, model.dataset_id)
    if mv.dataset_version != ds.current_version:
        raise Conflict(
            f"The training data of version {version} was erased by a later request (the "
            f"dataset is at version {ds.current_version}); verify version "
            f"{model.current_version} instead."
        )
    job = new_job(
        session,
        tenant=principal.tenant,
        kind="verify",
        model_id=model.id,
        payload={"version": version},
    )
    session.commit()
    dispatch([job.id])
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return {"model": model.name, "version": version, "job_id": job.id, "status": job.status}


@router.post("/{name}/versions/{version}/score")
def score(
    name: str, version: int, body: ScoreIn, principal: Reader, session: SessionDep
) -> dict[str, Any]:
    """Probe a version: class probabilities for feature rows (``X``: rows × n_features), or for
    a language model the log-perplexity in bits of each text after ``prefix`` (teacher forcing)
    and/or the greedy completion of ``complete`` characters."""
    from unlearning import model_from_safetensors, predict_proba

    model = model_or_404(session, principal.tenant, name)
    mv = version_or_404(session, model, version)
    trained = model_from_safetensors(store().get(mv.sha256))
    is_lm = trained.architecture.get("kind") == "char_lstm"
    if body.X is None:
        if not is_lm:
            raise InvalidInput(f"Model '{model.name}' is a classifier: send feature rows 'X'.")
        from unlearning.text import complete, log_perplexities

        out: dict[str, Any] = {"model": model.name, "version": mv.version}
        try:
            if body.texts is not None:
                out["log_perplexities"] = [
                    float(v) for v in log_perplexities(trained, body.prefix, body.texts)
                ]
                out["unit"] = "bits"
            if body.complete is not None:
                out["completion"] = complete(trained, body.prefix, body.complete)
        except ValueError as exc:
            raise InvalidInput(f"Cannot score these texts: {exc}") from exc
        return out
    if is_lm:
        raise InvalidInput(
            f"Model '{model.name}' is a language model: send 'prefix' with 'texts' or 'complete'."
        )
    lengths = {len(r) for r in body.X}
    if lengths != {trained.n_features}:
        raise InvalidInput(
            f"Each row of X must have {trained.n_features} features; got lengths "
            f"{sorted(lengths)[:5]}."
        )
    X = np.asarray(body.X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise InvalidInput("X must contain finite numbers only.")
    proba = predict_proba(trained, X)
    return {
        "model": model.name,
        "version": mv.version,
        "probabilities": proba.tolist(),
        "predictions": proba.argmax(axis=1).tolist(),
    }
