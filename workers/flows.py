"""Job flows: training version 1 and applying an unlearning request.

Each flow loads what it needs, computes without holding a database transaction, writes the
artifacts (content-addressed, so a rerun rewrites the same bytes), then commits everything the
job produces in one transaction fenced on its lease: the model version (unique per job), the new
dataset version, the job result, the redacted request and the audit event. After the commit the
superseded dataset version is erased from the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from app.audit import append_event
from app.datasets import TabularData
from app.db import session_scope
from app.lookups import current_dataset_version, load_dataset, store
from app.orm import Dataset, DatasetVersion, Job, Model, ModelVersion, UnlearningRequest, utcnow
from app.settings import get_settings
from unlearning import (
    TrainedModel,
    TrainingOptions,
    UnlearnOptions,
    evaluate,
    model_from_safetensors,
    model_to_safetensors,
    parameter_count,
    train,
    unlearn,
)
from workers.outcomes import purge_superseded_datasets, redacted_payload
from workers.runner import JobContext, JobFailed, _finish

log = logging.getLogger("unlearnd.worker")


def execute(ctx: JobContext) -> None:
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        kind = job.kind
    if kind == "train":
        train_flow(ctx)
    elif kind == "unlearn":
        unlearn_flow(ctx)
    elif kind == "verify":
        verify_flow(ctx)
    else:
        raise JobFailed(f"Unknown job kind '{kind}'.")


def _training_options(model: Model) -> TrainingOptions:
    return TrainingOptions.from_dict({**model.training, "device": get_settings().resolved_device()})


def train_flow(ctx: JobContext) -> None:
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        model = s.get(Model, job.model_id)
        assert model is not None
        ds = s.get(Dataset, model.dataset_id)
        assert ds is not None
        dv = current_dataset_version(s, ds)
        dataset_sha, dataset_version = dv.sha256, dv.version
    ctx.report("loading data", 0.05)
    data = load_dataset(dataset_sha)
    ctx.report("training", 0.1)
    trained, metrics = train(
        model.architecture, data.X, data.y, data.n_classes, _training_options(model)
    )
    ctx.report("saving", 0.9)
    weights = model_to_safetensors(trained)
    sha = store().put(weights)
    metrics = {
        **metrics,
        "n_parameters": parameter_count(model.architecture, data.n_features, data.n_classes),
        "n_records": data.n_records,
    }
    with session_scope() as s:
        job = ctx.fence(s)
        existing = s.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
        if existing is None:
            mv = ModelVersion(
                model_id=model.id,
                version=1,
                parent=None,
                job_id=job.id,
                dataset_version=dataset_version,
                request_ids=[],
                sha256=sha,
                size_bytes=len(weights),
                metrics={"training": metrics},
                certificate=None,
                created_at=utcnow(),
            )
            s.add(mv)
            s.execute(
                Model.__table__.update().where(Model.id == model.id).values(current_version=1)
            )
            append_event(
                s,
                get_settings().resolved_secret_key(),
                tenant=job.tenant,
                type="model.trained",
                model=model.name,
                job_id=job.id,
                data={
                    "version": 1,
                    "sha256": sha,
                    "dataset_version": dataset_version,
                    "grad_norm": metrics["grad_norm"],
                },
            )
        _finish(
            s, job, "succeeded", result={"model_version": 1, "method": "train", "metrics": metrics}
        )


@dataclass
class Change:
    """The affected rows of a request: Z = data[rows] as it is, Z̃ its corrected form, and the
    corrected dataset D'."""

    rows: np.ndarray
    Z_X: np.ndarray
    Z_y: np.ndarray
    Zt_X: np.ndarray
    Zt_y: np.ndarray
    after: TabularData
    record_ids: list[str]
    already_erased: int = 0


def resolve_change(kind: str, payload: dict[str, Any], data: TabularData) -> Change:
    """Find Z through the dataset's id index (no scan per request) and build Z̃ and D'."""
    d = data.n_features
    if kind == "delete_records":
        if payload.get("subject_id"):
            rows = np.array(data.rows_of_subject.get(payload["subject_id"], []), dtype=np.int64)
            missing = 0
        else:
            ids = payload["record_ids"]
            found = [data.row_of[r] for r in ids if r in data.row_of]
            rows, missing = np.array(found, dtype=np.int64), len(ids) - len(found)
        if rows.size == 0:
            raise JobFailed(
                "None of the records of this request remain in the dataset: they "
                "were erased by an earlier request."
            )
        if rows.size >= data.n_records:
            raise JobFailed(
                "The request would erase every record of the dataset; delete the model instead."
            )
        rows.sort()
        return Change(
            rows,
            data.X[rows],
            data.y[rows],
            np.zeros((0, d), data.X.dtype),
            np.zeros(0, np.int64),
            data.without_rows(rows),
            data.record_ids[rows].tolist(),
            missing,
        )
    X_new, y_new = data.X.copy(), data.y.copy()
    if kind == "correct_labels":
        pairs = [
            (data.row_of[c["record_id"]], c["label"])
            for c in payload["corrections"]
            if c["record_id"] in data.row_of
        ]
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        for r, label in pairs:
            if label >= data.n_classes:
                raise JobFailed(f"Label {label} is not a class of this model.")
            y_new[r] = label
    elif kind == "correct_features":
        col = {n: j for j, n in enumerate(data.feature_names.tolist())}
        rows_list = []
        for c in payload["corrections"]:
            if c["record_id"] not in data.row_of:
                continue
            r = data.row_of[c["record_id"]]
            rows_list.append(r)
            for name, value in c["features"].items():
                X_new[r, col[name]] = value
        rows = np.array(rows_list, dtype=np.int64)
    elif kind == "remove_features":
        col = {n: j for j, n in enumerate(data.feature_names.tolist())}
        cols = [col[n] for n in payload["features"]]
        rows = np.flatnonzero((data.X[:, cols] != 0).any(axis=1))
        X_new[np.ix_(rows, cols)] = 0
    else:
        raise JobFailed(f"Request kind '{kind}' is not supported for tabular models.")
    if rows.size == 0:
        raise JobFailed("The request affects no record of the current dataset.")
    after = TabularData(X_new, y_new, data.record_ids, data.subject_ids, data.feature_names)
    return Change(
        rows,
        data.X[rows],
        data.y[rows],
        X_new[rows],
        y_new[rows],
        after,
        data.record_ids[rows].tolist(),
    )


def choose_method(requested: str, n_params: int) -> tuple[str, str]:
    """Resolve ``auto``: exact second order while the dense Hessian fits the configured size
    (``UNLEARND_EXACT_MAX_PARAMS``), first order beyond."""
    limit = get_settings().exact_max_params
    if requested == "auto":
        if n_params <= limit:
            return "second_order", f"auto: {n_params} parameters ≤ {limit}, exact Newton step"
        return "first_order", f"auto: {n_params} parameters > {limit}, no dense Hessian"
    if requested == "second_order" and n_params > limit:
        raise JobFailed(
            f"second_order needs a dense Hessian of {n_params}² entries, above "
            f"UNLEARND_EXACT_MAX_PARAMS={limit}; use auto, first_order or retrain."
        )
    return requested, "requested"


def _fidelity(model: TrainedModel, change: Change) -> dict[str, Any]:
    """Loss/accuracy on D' (fidelity) and on the affected records (efficacy)."""
    out = {"train": evaluate(model, change.after.X, change.after.y)}
    if change.Zt_X.shape[0]:
        out["affected_corrected"] = evaluate(model, change.Zt_X, change.Zt_y)
    out["affected_original"] = evaluate(model, change.Z_X, change.Z_y)
    return out


def bad_evidence(model: TrainedModel, metrics: dict[str, Any]) -> str | None:
    """Why an update cannot be trusted, or ``None``: non-finite parameters, or a gradient
    residual on the corrected data worse than before the update (the step overshot)."""
    if not all(bool(np.isfinite(t.numpy()).all()) for t in model.params.values()):
        return "the update produced non-finite parameters"
    after, before = metrics.get("gradient_residual"), metrics.get("gradient_residual_before")
    if after is not None and before is not None and not after <= before:
        return f"the gradient residual on the corrected data rose from {before:.3g} to {after:.3g}"
    return None


def unlearn_flow(ctx: JobContext) -> None:
    settings = get_settings()
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        req = s.scalar(select(UnlearningRequest).where(UnlearningRequest.job_id == job.id))
        model = s.get(Model, job.model_id)
        assert req is not None and model is not None
        if model.current_version is None:
            raise JobFailed(
                f"Model '{model.name}' has no trained version (its training "
                "failed); train a new model and resubmit."
            )
        mv = s.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == model.current_version
            )
        )
        ds = s.get(Dataset, model.dataset_id)
        assert mv is not None and ds is not None
        dv = current_dataset_version(s, ds)
        weights_sha, base_version, train_metrics = mv.sha256, mv.version, mv.metrics
        dataset_sha, dataset_version = dv.sha256, dv.version
        req_kind, payload = req.kind, dict(req.payload)
    ctx.report("loading", 0.05)
    data = load_dataset(dataset_sha)
    before = model_from_safetensors(store().get(weights_sha))
    change = resolve_change(req_kind, payload, data)
    n_params = parameter_count(model.architecture, data.n_features, data.n_classes)
    method, why = choose_method(payload.get("method", "auto"), n_params)
    ctx.report(f"updating ({method})", 0.2)
    started = time.perf_counter()
    fell_back = None

    def retrain() -> tuple[TrainedModel, dict[str, Any]]:
        retrained, tmetrics = train(
            model.architecture,
            change.after.X,
            change.after.y,
            data.n_classes,
            _training_options(model),
        )
        return retrained, {"retraining": tmetrics, "gradient_residual": tmetrics["grad_norm"]}

    update_metrics: dict[str, Any]
    if method == "retrain":
        after_model, update_metrics = retrain()
    else:
        options = UnlearnOptions(
            method=method, tau=payload.get("tau"), device=settings.resolved_device()
        )
        result = unlearn(
            before,
            change.after.X,
            change.after.y,
            change.Z_X,
            change.Z_y,
            change.Zt_X,
            change.Zt_y,
            options,
        )
        after_model, update_metrics = result.model, dict(result.metrics)
        fell_back = bad_evidence(after_model, update_metrics)
        if fell_back is not None and payload.get("method", "auto") == "auto":
            method = "retrain"
            after_model, update_metrics = retrain()
    wall = time.perf_counter() - started
    update_metrics["update_norm"] = float(
        sum(((after_model.params[k] - before.params[k]) ** 2).sum() for k in before.params) ** 0.5
    )
    ctx.report("evaluating", 0.8)
    base_train_time = (train_metrics.get("training") or {}).get("wall_time_s")
    metrics: dict[str, Any] = {
        **update_metrics,
        "wall_time_s": wall,
        "method_reason": why
        if method != "retrain" or fell_back is None
        else f"fallback to retraining: {fell_back}",
        "evidence_warning": fell_back if method != "retrain" else None,
        "n_affected": int(change.rows.size),
        "already_erased": change.already_erased,
        "fidelity_before": _fidelity(before, change),
        "fidelity_after": _fidelity(after_model, change),
        "estimated_retrain_s": (
            base_train_time * change.after.n_records / data.n_records if base_train_time else None
        ),
    }
    ctx.report("saving", 0.9)
    weights = model_to_safetensors(after_model)
    sha = store().put(weights)
    data_bytes = change.after.to_npz_bytes()
    data_sha = store().put(data_bytes)
    secret = settings.resolved_secret_key()
    with session_scope() as s:
        job = ctx.fence(s)
        model_row = s.get(Model, model.id)
        assert model_row is not None
        if s.scalar(select(ModelVersion.id).where(ModelVersion.job_id == job.id)) is None:
            if model_row.current_version != base_version:
                raise RuntimeError("the model moved on while this job ran; recomputing")
            new_version = base_version + 1
            s.add(
                DatasetVersion(
                    dataset_id=ds.id,
                    version=dataset_version + 1,
                    parent_version=dataset_version,
                    n_records=change.after.n_records,
                    n_features=change.after.n_features,
                    n_classes=data.n_classes,
                    sha256=data_sha,
                    size_bytes=len(data_bytes),
                    job_id=job.id,
                    created_at=utcnow(),
                )
            )
            s.add(
                ModelVersion(
                    model_id=model.id,
                    version=new_version,
                    parent=base_version,
                    job_id=job.id,
                    dataset_version=dataset_version + 1,
                    request_ids=[req.id],
                    sha256=sha,
                    size_bytes=len(weights),
                    metrics=metrics,
                    certificate=None,
                    created_at=utcnow(),
                )
            )
            model_row.current_version = new_version
            ds_row = s.get(Dataset, ds.id)
            assert ds_row is not None
            ds_row.current_version = dataset_version + 1
            req_row = s.get(UnlearningRequest, req.id)
            assert req_row is not None
            req_row.payload = redacted_payload(secret, payload)
            append_event(
                s,
                secret,
                tenant=job.tenant,
                type="request.completed",
                model=model.name,
                request_id=req.id,
                job_id=job.id,
                subject_ids=sorted({sid for sid in data.subject_ids[change.rows].tolist() if sid}),
                record_ids=change.record_ids,
                data={
                    "kind": req_kind,
                    "method": method,
                    "model_version": new_version,
                    "parent_version": base_version,
                    "weights_sha256": sha,
                    "dataset_version": dataset_version + 1,
                    "dataset_sha256": data_sha,
                    "update_norm": metrics.get("update_norm"),
                    "gradient_residual": metrics.get("gradient_residual"),
                },
            )
            result = {"model_version": new_version, "method": method, "metrics": metrics}
        else:
            result = job.result or {}
        _finish(s, job, "succeeded", result=result)
    purge_superseded_datasets()


def _flat(model: TrainedModel) -> np.ndarray:
    return np.concatenate([t.detach().cpu().numpy().ravel() for t in model.params.values()])


def verify_flow(ctx: JobContext) -> None:
    """Retrain a reference from scratch on the data of a version and compare: parameter
    distance, prediction agreement and accuracy difference (an auditor's independent check)."""
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        model = s.get(Model, job.model_id)
        assert model is not None
        mv = s.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == job.payload["version"]
            )
        )
        ds = s.get(Dataset, model.dataset_id)
        assert mv is not None and ds is not None
        dv = s.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == ds.id, DatasetVersion.version == mv.dataset_version
            )
        )
        if dv is None or dv.purged_at is not None:
            raise JobFailed(
                f"The data of version {mv.version} was erased by a later request; "
                "verify the current version instead."
            )
        weights_sha, data_sha, version = mv.sha256, dv.sha256, mv.version
    ctx.report("loading", 0.05)
    data = load_dataset(data_sha)
    candidate = model_from_safetensors(store().get(weights_sha))
    ctx.report("retraining reference", 0.1)
    started = time.perf_counter()
    reference, ref_metrics = train(
        model.architecture, data.X, data.y, data.n_classes, _training_options(model)
    )
    retrain_s = time.perf_counter() - started
    ctx.report("comparing", 0.9)
    from unlearning import predict_proba

    theta_c, theta_r = _flat(candidate), _flat(reference)
    pred_c = predict_proba(candidate, data.X).argmax(axis=1)
    pred_r = predict_proba(reference, data.X).argmax(axis=1)
    acc_c, acc_r = evaluate(candidate, data.X, data.y), evaluate(reference, data.X, data.y)
    result = {
        "model_version": version,
        "method": "verify",
        "metrics": {
            "parameter_distance": float(np.linalg.norm(theta_c - theta_r)),
            "relative_parameter_distance": float(
                np.linalg.norm(theta_c - theta_r) / max(np.linalg.norm(theta_r), 1e-300)
            ),
            "prediction_agreement": float((pred_c == pred_r).mean()),
            "accuracy_version": acc_c["accuracy"],
            "accuracy_reference": acc_r["accuracy"],
            "accuracy_difference": acc_c["accuracy"] - acc_r["accuracy"],
            "loss_version": acc_c["loss"],
            "loss_reference": acc_r["loss"],
            "reference_training": ref_metrics,
            "retrain_wall_time_s": retrain_s,
            "n_records": data.n_records,
        },
    }
    with session_scope() as s:
        job = ctx.fence(s)
        append_event(
            s,
            get_settings().resolved_secret_key(),
            tenant=job.tenant,
            type="version.verified",
            model=model.name,
            job_id=job.id,
            data={
                "version": version,
                "relative_parameter_distance": result["metrics"]["relative_parameter_distance"],
                "prediction_agreement": result["metrics"]["prediction_agreement"],
                "accuracy_difference": result["metrics"]["accuracy_difference"],
            },
        )
        _finish(s, job, "succeeded", result=result)
