"""Job flows: training version 1, applying an unlearning request, verifying a version.

Each flow loads what it needs, computes without holding a database transaction, writes the
artifacts (content-addressed, so a rerun rewrites the same bytes), then commits everything the
job produces in one transaction fenced on its lease: the model version (unique per job), the new
dataset version, the job result, the redacted request and the audit event. After the commit the
superseded dataset version is erased from the store, and for convex models the factorisation
of the new version's Hessian is built and cached for the next request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import select, update

from app.audit import append_event
from app.datasets import TabularData, TextCorpus, load_text
from app.db import session_scope
from app.lookups import current_dataset_version, load_dataset, store
from app.orm import Dataset, DatasetVersion, Job, Model, ModelVersion, UnlearningRequest, utcnow
from app.settings import get_settings
from models_store import ArtifactNotFound
from unlearning import (
    Factorization,
    TrainedModel,
    TrainingOptions,
    UnlearnOptions,
    build_block_factorization,
    build_factorization,
    evaluate,
    model_from_safetensors,
    model_to_safetensors,
    parameter_count,
    train,
    unlearn,
)
from unlearning.architectures import get_spec
from unlearning.updates import block_cache_refusal
from workers import certify
from workers.changes import Change, tabular_change, text_change
from workers.outcomes import purge_superseded_datasets, redacted_payload
from workers.runner import JobContext, JobFailed, _finish
from workers.strategy import bad_evidence, tiers, update_options

log = logging.getLogger("unlearnd.worker")


def execute(ctx: JobContext) -> None:
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        kind = job.kind
    flows = {"train": train_flow, "unlearn": unlearn_flow, "verify": verify_flow}
    if kind not in flows:
        raise JobFailed(f"Unknown job kind '{kind}'.")
    flows[kind](ctx)


def _training_options(training: dict[str, Any]) -> TrainingOptions:
    return TrainingOptions.from_dict({**training, "device": get_settings().resolved_device()})


def _load_data(kind: str, sha256: str) -> TabularData | TextCorpus:
    if kind == "text":
        try:
            return load_text(store().get(sha256))
        except ArtifactNotFound as exc:
            raise JobFailed("The corpus of this dataset version was erased.") from exc
    return load_dataset(sha256)


def _train_from_scratch(
    architecture: dict[str, Any], data: TabularData | TextCorpus, training: dict[str, Any]
) -> tuple[TrainedModel, dict[str, Any]]:
    """Train on a whole dataset version (the vocabulary of a text model comes from its corpus)."""
    try:
        if isinstance(data, TextCorpus):
            from unlearning.text import train_text

            return train_text(architecture, data.text, _training_options(training))
        return train(architecture, data.X, data.y, data.n_classes, _training_options(training))
    except ValueError as exc:
        raise JobFailed(f"Training failed: {exc}") from exc


def _training_arrays(
    model: TrainedModel, data: TabularData | TextCorpus
) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of the model's training points on ``data``."""
    if isinstance(data, TextCorpus):
        from unlearning.text import windows

        arch = model.architecture
        return windows(data.text, int(arch["window"]), 1, arch["vocabulary"])
    return data.X, data.y


def _cache_factorization(
    model_id: str, version: int, model: TrainedModel, X: np.ndarray, y: np.ndarray
) -> None:
    """Build and store the factorisation of a new convex version (H at its θ on its data), and
    drop the previous version's (derived data, rebuildable).

    Up to ``exact_max_params`` parameters: the Cholesky factor of the dense H (exact solves with a
    Woodbury correction). Beyond, for a multiclass linear model: the inverses of H's per-class
    blocks, the preconditioner of its CG solves (up to ``MAX_BLOCK_ENTRIES`` entries). Other
    models cache nothing.
    """
    settings = get_settings()
    spec = get_spec(model.architecture)
    n_params = sum(int(t.numel()) for t in model.params.values())
    if not spec.convex:
        return
    if n_params > settings.exact_max_params and block_cache_refusal(model) is not None:
        return
    try:
        if n_params <= settings.exact_max_params:
            fact = build_factorization(
                model, X, y, device=settings.resolved_device(), max_params=settings.exact_max_params
            )
        else:
            fact = build_block_factorization(model, X, y, device=settings.resolved_device())
    except (ValueError, RuntimeError):
        log.warning(
            "factorisation of %s v%d failed; requests will rebuild it",
            model_id,
            version,
            exc_info=True,
        )
        return
    sha = store().put(fact.to_bytes())
    with session_scope() as s:
        old = s.scalars(
            select(ModelVersion.factorization_sha256)
            .where(ModelVersion.model_id == model_id, ModelVersion.version < version)
            .where(ModelVersion.factorization_sha256.is_not(None))
        ).all()
        s.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model_id, ModelVersion.version < version)
            .values(factorization_sha256=None)
        )
        s.execute(
            update(ModelVersion)
            .where(ModelVersion.model_id == model_id, ModelVersion.version == version)
            .values(factorization_sha256=sha)
        )
    for key in set(old) - {sha}:
        store().delete(key)


def _train_certified(
    architecture: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    training: dict[str, Any],
    cfg: dict[str, Any],
    lineage: int,
    reason: str,
    sigma: float | None = None,
    sigma_info: dict[str, Any] | None = None,
) -> tuple[TrainedModel, dict[str, Any], dict[str, Any], str]:
    """Train with objective perturbation from a fresh secret seed; return the model, its
    metrics, the lineage's initial certificate and the store key of the seed."""
    options = _training_options(training)
    if sigma is None:
        if cfg.get("sigma") is not None:
            sigma, sigma_info = float(cfg["sigma"]), {"sigma_source": "given"}
        else:
            try:
                sigma, sigma_info = certify.choose_sigma(
                    architecture,
                    X,
                    y,
                    options,
                    cfg["epsilon"],
                    cfg["delta"],
                    int(cfg.get("capacity") or certify.DEFAULT_CAPACITY),
                )
            except ValueError as exc:
                raise JobFailed(f"Cannot choose sigma: {exc}") from exc
    seed, artifact = certify.new_seed()
    noise_sha = store().put(artifact)
    p = parameter_count(architecture, X.shape[1], 2)
    try:
        trained, metrics = train(
            architecture, X, y, 2, options, noise=certify.draw_noise(seed, p, sigma)
        )
    except ValueError as exc:
        raise JobFailed(f"Training failed: {exc}") from exc
    cert = certify.initial_certificate(
        cfg, sigma, sigma_info or {}, metrics["grad_norm"], lineage, reason
    )
    return trained, metrics, cert, noise_sha


def _certificate_summary(cert: dict[str, Any] | None) -> dict[str, Any]:
    """What the audit trail records of a certificate (never the seed)."""
    if cert is None:
        return {"certified": False}
    return {
        key: cert[key]
        for key in (
            "certified",
            "epsilon",
            "delta",
            "sigma",
            "budget",
            "budget_used",
            "budget_left",
            "lineage",
        )
    }


def train_flow(ctx: JobContext) -> None:
    with session_scope() as s:
        job = s.get(Job, ctx.job_id)
        assert job is not None
        model = s.get(Model, job.model_id)
        assert model is not None
        ds = s.get(Dataset, model.dataset_id)
        assert ds is not None
        dv = current_dataset_version(s, ds)
        dataset_sha, dataset_version, dataset_kind = dv.sha256, dv.version, ds.kind
    ctx.report("loading data", 0.05)
    data = _load_data(dataset_kind, dataset_sha)
    ctx.report("training", 0.1)
    certificate, noise_sha = None, None
    if model.certification:
        assert isinstance(data, TabularData)
        trained, metrics, certificate, noise_sha = _train_certified(
            model.architecture,
            data.X,
            data.y,
            model.training,
            model.certification,
            lineage=1,
            reason="initial training",
        )
    else:
        trained, metrics = _train_from_scratch(model.architecture, data, model.training)
    ctx.report("saving", 0.9)
    weights = model_to_safetensors(trained)
    sha = store().put(weights)
    X, y = _training_arrays(trained, data)
    if isinstance(data, TabularData) and data.X_test is not None and data.y_test is not None:
        metrics["held_out"] = evaluate(trained, data.X_test, data.y_test)
    metrics = {
        **metrics,
        "n_parameters": sum(int(t.numel()) for t in trained.params.values()),
        "n_records": data.n_chars if isinstance(data, TextCorpus) else data.n_records,
        "n_training_points": len(y),
    }
    with session_scope() as s:
        job = ctx.fence(s)
        if s.scalar(select(ModelVersion.id).where(ModelVersion.job_id == job.id)) is None:
            s.add(
                ModelVersion(
                    model_id=model.id,
                    version=1,
                    parent=None,
                    job_id=job.id,
                    dataset_version=dataset_version,
                    request_ids=[],
                    sha256=sha,
                    size_bytes=len(weights),
                    metrics={"training": metrics},
                    certificate=certificate,
                    noise_sha256=noise_sha,
                    created_at=utcnow(),
                )
            )
            s.execute(update(Model).where(Model.id == model.id).values(current_version=1))
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
                    "grad_norm": metrics.get("grad_norm"),
                    **_certificate_summary(certificate),
                },
            )
        result: dict[str, Any] = {"model_version": 1, "method": "train", "metrics": metrics}
        if certificate is not None:
            result["certificate"] = certificate
        _finish(s, job, "succeeded", result=result)
    _cache_factorization(model.id, 1, trained, X, y)


def _evaluate(model: TrainedModel, change: Change) -> dict[str, Any]:
    """Loss/accuracy on D' (fidelity) and on the affected points (efficacy)."""
    out = {
        "train": evaluate(model, change.X_after, change.y_after),
        "affected_original": evaluate(model, change.Z_X, change.Z_y),
    }
    if change.Zt_X.shape[0]:
        out["affected_corrected"] = evaluate(model, change.Zt_X, change.Zt_y)
    if change.held_out is not None:
        out["held_out"] = evaluate(model, *change.held_out)
    return out


def _param_distance(a: TrainedModel, b: TrainedModel) -> float:
    return float(sum(float(((a.params[k] - b.params[k]) ** 2).sum()) for k in b.params) ** 0.5)


def apply_request(
    before: TrainedModel,
    change: Change,
    requested: str,
    overrides: dict[str, Any],
    factorization: Factorization | None,
    training: dict[str, Any],
    report: Any = None,
    retrain: Any = None,
) -> tuple[TrainedModel, str, dict[str, Any]]:
    """Run the tiers of :mod:`workers.strategy` until one's evidence is good (or the last).

    Returns the new model, the method that produced it and its metrics, with ``attempts``
    listing every tier tried and why it was left."""
    settings = get_settings()
    convex = get_spec(before.architecture).convex
    plan = tiers(requested, convex, overrides)
    attempts: list[dict[str, Any]] = []
    loss_before = evaluate(before, change.X_after, change.y_after)["loss"]
    for i, (method, variant) in enumerate(plan):
        if report is not None:
            report(f"updating ({method})", 0.2 + 0.6 * i / len(plan))
        started = time.perf_counter()
        if method == "retrain":
            try:
                model, tm = (
                    retrain(change.X_after, change.y_after)
                    if retrain is not None
                    else train(
                        before.architecture,
                        change.X_after,
                        change.y_after,
                        before.n_classes,
                        _training_options(training),
                    )
                )
            except ValueError as exc:
                raise JobFailed(f"Retraining failed: {exc}") from exc
            metrics: dict[str, Any] = {"retraining": tm, "gradient_residual": tm.get("grad_norm")}
        else:
            try:
                options = UnlearnOptions(
                    **update_options(
                        method,
                        convex,
                        overrides,
                        settings.exact_max_params,
                        settings.resolved_device(),
                        variant,
                    )
                )
                result = unlearn(
                    before,
                    change.X_after,
                    change.y_after,
                    change.Z_X,
                    change.Z_y,
                    change.Zt_X,
                    change.Zt_y,
                    options,
                    factorization=factorization if method == "second_order" else None,
                )
            except ValueError as exc:
                raise JobFailed(f"The {method} update cannot run: {exc}") from exc
            model, metrics = result.model, dict(result.metrics)
        metrics["wall_time_s"] = time.perf_counter() - started
        metrics["update_norm"] = _param_distance(model, before)
        loss_after = evaluate(model, change.X_after, change.y_after)["loss"]
        verdict = (
            None
            if method == "retrain"
            else bad_evidence(
                model, metrics, None if convex else loss_before, None if convex else loss_after
            )
        )
        if verdict is None and method != "retrain" and change.efficacy is not None:
            verdict = change.efficacy(model)
        attempts.append(
            {
                "method": method,
                **({"variant": variant} if variant else {}),
                "wall_time_s": metrics["wall_time_s"],
                "gradient_residual": metrics.get("gradient_residual"),
                "loss_after": loss_after,
                "rejected": verdict,
            }
        )
        if verdict is None or i == len(plan) - 1:
            if verdict is not None:
                metrics["evidence_warning"] = verdict
            metrics["attempts"] = attempts
            metrics["wall_time_s"] = sum(a["wall_time_s"] for a in attempts)
            if requested == "auto":
                reasons = [
                    f"{a['method']}{' (' + a['variant'] + ')' if a.get('variant') else ''} "
                    f"rejected: {a['rejected']}"
                    for a in attempts[:-1]
                ]
                metrics["method_reason"] = "; ".join(
                    [f"auto for a {'convex' if convex else 'non-convex'} model", *reasons]
                )
            else:
                metrics["method_reason"] = "requested"
            return model, method, metrics
    raise AssertionError("unreachable")


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
                f"Model '{model.name}' has no trained version (its training failed); train a "
                "new model and resubmit."
            )
        mv = s.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == model.current_version
            )
        )
        ds = s.get(Dataset, model.dataset_id)
        assert mv is not None and ds is not None
        dv = current_dataset_version(s, ds)
        weights_sha, base_version, base_metrics = mv.sha256, mv.version, mv.metrics
        factorization_sha = mv.factorization_sha256
        cert = mv.certificate if (mv.certificate or {}).get("sigma") else None
        noise_sha = mv.noise_sha256
        dataset_sha, dataset_version, dataset_kind = dv.sha256, dv.version, ds.kind
        req_kind, payload = req.kind, dict(req.payload)
    ctx.report("loading", 0.05)
    data = _load_data(dataset_kind, dataset_sha)
    before = model_from_safetensors(store().get(weights_sha))
    if isinstance(data, TextCorpus):
        if req_kind != "rectify_text":
            raise JobFailed(f"'{req_kind}' does not apply to a text corpus; use rectify_text.")
        change = text_change(payload, data, before, settings.exposure_candidates)
    else:
        change = tabular_change(req_kind, payload, data)
        if data.X_test is not None and data.y_test is not None:
            change.held_out = (data.X_test, data.y_test)
    factorization = None
    if factorization_sha is not None:
        try:
            factorization = Factorization.from_bytes(store().get(factorization_sha))
        except (ArtifactNotFound, ValueError):
            log.warning("cached factorisation %s unusable; rebuilding", factorization_sha)
    fresh: dict[str, Any] = {}  # a certified retraining's new certificate and seed key
    retrain_certified = None
    if cert is not None:
        if noise_sha is None:
            raise JobFailed("The secret noise of this certified lineage is missing.")
        seed = certify.read_seed(store().get(noise_sha))
        before.noise = certify.noise_for(before, seed, cert["sigma"])
        sigma_info = {
            k: cert[k]
            for k in ("sigma_source", "capacity", "typical_request_charge", "rule")
            if k in cert
        }

        def retrain_certified(
            X: np.ndarray, y: np.ndarray, reason: str = "retraining"
        ) -> tuple[TrainedModel, dict[str, Any]]:
            m, tm, fresh["cert"], fresh["noise"] = _train_certified(
                before.architecture,
                X,
                y,
                model.training,
                model.certification or {},
                lineage=cert["lineage"] + 1,
                reason=reason,
                sigma=cert["sigma"],
                sigma_info=sigma_info,
            )
            return m, tm

    started = time.perf_counter()
    overrides = dict(payload.get("options") or {})
    if payload.get("tau") is not None:
        overrides["tau"] = payload["tau"]
    after_model, method, metrics = apply_request(
        before,
        change,
        payload.get("method", "auto"),
        overrides,
        factorization,
        model.training,
        ctx.report,
        retrain_certified,
    )
    new_cert, new_noise_sha = None, None
    if cert is not None and retrain_certified is not None:
        if method == "retrain":
            new_cert, new_noise_sha = fresh["cert"], fresh["noise"]
        else:
            charge, how = certify.request_charge(
                before, after_model, change.X_after, change.y_after, metrics
            )
            new_cert = certify.charged(cert, req.id, metrics["gradient_residual"], charge, how)
            new_noise_sha = noise_sha
            metrics["certification_charge"] = {"charge": charge, "charged_as": how}
            if new_cert is None:
                ctx.report("retraining (privacy budget exhausted)", 0.7)
                t0 = time.perf_counter()
                after_model, tm = retrain_certified(
                    change.X_after, change.y_after, reason=f"budget exhausted by request {req.id}"
                )
                new_cert, new_noise_sha = fresh["cert"], fresh["noise"]
                method = "retrain"
                metrics.update(
                    retraining=tm,
                    gradient_residual=tm["grad_norm"],
                    budget_exhausted=True,
                    method_reason=(
                        f"privacy budget exhausted: charge {charge:.4g} > left "
                        f"{cert['budget_left']:.4g}; retrained from scratch with fresh noise"
                    ),
                    wall_time_s=metrics["wall_time_s"] + time.perf_counter() - t0,
                )
        metrics["certified"] = bool(new_cert and new_cert["certified"])
    ctx.report("evaluating", 0.85)
    base_train = (base_metrics.get("training") or {}).get("wall_time_s") or base_metrics.get(
        "reference_training_s"
    )
    n_before = len(change.y_after) - len(change.Zt_y) + len(change.Z_y)
    metrics.update(
        {
            "job_compute_s": time.perf_counter() - started,
            "n_affected": change.n_affected,
            "already_erased": change.already_erased,
            "fidelity_before": _evaluate(before, change),
            "fidelity_after": _evaluate(after_model, change),
            "reference_training_s": base_train,
            "estimated_retrain_s": base_train * len(change.y_after) / n_before
            if base_train
            else None,
            **change.details,
        }
    )
    if change.probe is not None:
        ctx.report("measuring exposure", 0.87)
        metrics["efficacy_before"] = change.probe(before)
        metrics["efficacy_after"] = change.probe(after_model)
    ctx.report("saving", 0.9)
    weights = model_to_safetensors(after_model)
    sha = store().put(weights)
    data_sha = store().put(change.new_data)
    secret = settings.resolved_secret_key()
    new_version = base_version + 1
    with session_scope() as s:
        job = ctx.fence(s)
        model_row = s.get(Model, model.id)
        assert model_row is not None
        if s.scalar(select(ModelVersion.id).where(ModelVersion.job_id == job.id)) is None:
            if model_row.current_version != base_version:
                raise RuntimeError("the model moved on while this job ran; recomputing")
            s.add(
                DatasetVersion(
                    dataset_id=ds.id,
                    version=dataset_version + 1,
                    parent_version=dataset_version,
                    n_records=change.n_records_after,
                    n_features=dv.n_features,
                    n_classes=dv.n_classes,
                    sha256=data_sha,
                    size_bytes=len(change.new_data),
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
                    certificate=new_cert,
                    noise_sha256=new_noise_sha,
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
                subject_ids=change.subject_ids,
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
                    "budget_exhausted": bool(metrics.get("budget_exhausted")),
                    **(_certificate_summary(new_cert) if cert is not None else {}),
                },
            )
            result = {"model_version": new_version, "method": method, "metrics": metrics}
            if new_cert is not None:
                result["certificate"] = new_cert
        else:
            result = job.result or {}
        _finish(s, job, "succeeded", result=result)
    purge_superseded_datasets()
    _cache_factorization(model.id, new_version, after_model, change.X_after, change.y_after)


def verify_flow(ctx: JobContext) -> None:
    """Retrain a reference from scratch on the data of a version and compare: parameter
    distance, prediction agreement and accuracy difference (an auditor's independent check)."""
    from unlearning import predict_proba

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
        weights_sha, data_sha, version, kind = mv.sha256, dv.sha256, mv.version, ds.kind
        cert, noise_sha = mv.certificate, mv.noise_sha256
    ctx.report("loading", 0.05)
    data = _load_data(kind, data_sha)
    candidate = model_from_safetensors(store().get(weights_sha))
    X, y = _training_arrays(candidate, data)
    ctx.report("retraining reference", 0.1)
    noise = None
    if (cert or {}).get("sigma") and noise_sha is not None:
        # a certified version optimises the perturbed objective: the reference uses the same b
        noise = certify.noise_for(
            candidate, certify.read_seed(store().get(noise_sha)), cert["sigma"]
        )
    started = time.perf_counter()
    try:
        reference, ref_metrics = train(
            candidate.architecture,
            X,
            y,
            candidate.n_classes,
            _training_options(model.training),
            noise=noise,
        )
    except ValueError as exc:
        raise JobFailed(f"Retraining the reference failed: {exc}") from exc
    retrain_s = time.perf_counter() - started
    ctx.report("comparing", 0.9)
    theta_c = np.concatenate([t.numpy().ravel() for t in candidate.params.values()])
    theta_r = np.concatenate([t.numpy().ravel() for t in reference.params.values()])
    agree = float(
        (predict_proba(candidate, X).argmax(1) == predict_proba(reference, X).argmax(1)).mean()
    )
    ev_c, ev_r = evaluate(candidate, X, y), evaluate(reference, X, y)
    distance = float(np.linalg.norm(theta_c - theta_r))
    metrics = {
        "parameter_distance": distance,
        "relative_parameter_distance": distance / max(float(np.linalg.norm(theta_r)), 1e-300),
        "prediction_agreement": agree,
        "accuracy_version": ev_c["accuracy"],
        "accuracy_reference": ev_r["accuracy"],
        "accuracy_difference": ev_c["accuracy"] - ev_r["accuracy"],
        "loss_version": ev_c["loss"],
        "loss_reference": ev_r["loss"],
        "reference_training": ref_metrics,
        **(
            {
                "held_out_accuracy_version": evaluate(candidate, data.X_test, data.y_test)[
                    "accuracy"
                ],
                "held_out_accuracy_reference": evaluate(reference, data.X_test, data.y_test)[
                    "accuracy"
                ],
            }
            if isinstance(data, TabularData) and data.X_test is not None
            else {}
        ),
        "retrain_wall_time_s": retrain_s,
        "n_records": len(y),
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
                "relative_parameter_distance": metrics["relative_parameter_distance"],
                "prediction_agreement": agree,
                "accuracy_difference": metrics["accuracy_difference"],
            },
        )
        _finish(
            s,
            job,
            "succeeded",
            result={"model_version": version, "method": "verify", "metrics": metrics},
        )


__all__ = ["apply_request", "execute"]
