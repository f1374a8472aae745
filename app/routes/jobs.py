"""Jobs: state, progress, result; cancellation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import Reader, SessionDep, SettingsDep, Submitter
from app.errors import Conflict, NotFound
from app.jobs import job_view
from app.orm import Job, utcnow
from workers.outcomes import on_job_ended

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _job_or_404(session: SessionDep, tenant: str, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise NotFound(f"No job with id '{job_id}'.")
    return job


@router.get("/{job_id}")
def get_job(job_id: str, principal: Reader, session: SessionDep) -> dict[str, Any]:
    return job_view(_job_or_404(session, principal.tenant, job_id))


@router.post("/{job_id}/cancel", status_code=202)
def cancel_job(
    job_id: str, principal: Submitter, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop at its next checkpoint."""
    job = _job_or_404(session, principal.tenant, job_id)
    if job.status in ("succeeded", "failed", "canceled"):
        raise Conflict(f"Job '{job_id}' has already ended ({job.status}); nothing to cancel.")
    job.cancel_requested = True
    if job.status == "queued":
        job.status, job.stage, job.finished_at = "canceled", "canceled", utcnow()
        job.error = {"title": "Canceled", "detail": "Canceled before it ran."}
        on_job_ended(session, job)
    session.commit()
    return job_view(job)
