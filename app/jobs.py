"""Job creation and dispatch. A job row is committed first; its Celery message is sent after the
commit (:func:`dispatch`), and the reconciler re-sends it if the message is lost."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.orm import Job, utcnow
from app.settings import get_settings

log = logging.getLogger("unlearnd.jobs")


def new_job(
    session: Session,
    *,
    tenant: str,
    kind: str,
    model_id: str,
    payload: dict[str, Any] | None = None,
) -> Job:
    """Add a queued job to ``session`` (the caller commits, then calls :func:`dispatch`)."""
    job = Job(
        tenant=tenant,
        kind=kind,
        model_id=model_id,
        status="queued",
        stage="queued",
        progress=0.0,
        payload=payload or {},
        max_attempts=get_settings().job_max_attempts,
        created_at=utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def dispatch(job_ids: Iterable[str], countdown: float | None = None) -> None:
    """Send one Celery message per job. Never raises: a failed send is repaired by the
    reconciler, which re-sends queued jobs that were not dispatched recently."""
    from workers.celery_app import RUN_JOB, celery_app

    queue = get_settings().queue
    sent: list[str] = []
    for job_id in job_ids:
        try:
            celery_app.send_task(RUN_JOB, args=[job_id], queue=queue, countdown=countdown)
            sent.append(job_id)
        except Exception:
            log.warning(
                "could not send job %s to the broker; the reconciler will", job_id, exc_info=True
            )
    if sent:
        with session_scope() as s:
            s.execute(update(Job).where(Job.id.in_(sent)).values(dispatched_at=utcnow()))


def job_view(job: Job) -> dict[str, Any]:
    """The public representation of a job (``GET /v1/jobs/{id}``)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "stage": job.stage,
        "attempts": job.attempts,
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }
