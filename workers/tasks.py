"""Thin Celery tasks: everything they do lives in :mod:`workers.runner`."""

from __future__ import annotations

from celery import Task

from workers.celery_app import RUN_JOB, celery_app
from workers.runner import ClaimOutcome, run_job_once


@celery_app.task(name=RUN_JOB, bind=True, max_retries=None)
def run_job(self: Task, job_id: str) -> str:
    """Run job ``job_id`` if it can be claimed; retry later while its model is busy."""
    outcome = run_job_once(job_id, worker_id=f"{self.request.hostname}:{self.request.id}")
    if outcome is ClaimOutcome.BUSY:
        raise self.retry(countdown=1.0)
    return outcome.value
