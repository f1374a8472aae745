"""Liveness/readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from sqlalchemy import func, select, text

from app.deps import SessionDep
from app.orm import Job

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(session: SessionDep) -> Any:
    """200 when the database answers; 503 (problem+json) otherwise."""
    try:
        session.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse(
            {
                "type": "/problems/unavailable",
                "title": "Not ready",
                "status": 503,
                "detail": f"The database does not answer: {type(exc).__name__}",
            },
            status_code=503,
            media_type="application/problem+json",
        )
    return {"status": "ok", "database": "ok"}


@router.get("/metrics", response_class=Response)
def metrics(session: SessionDep) -> Response:
    from app.main import HTTP_REQUESTS

    registry = CollectorRegistry()
    jobs = Gauge("unlearnd_jobs", "Jobs by kind and status", ["kind", "status"], registry=registry)
    for kind, status, count in session.execute(
        select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
    ):
        jobs.labels(kind, status).set(count)
    body = generate_latest(registry) + generate_latest(HTTP_REQUESTS.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
