"""Job leasing: claim, heartbeat, fenced completion, bounded attempts.

A worker claims a job by taking a lease (``lease_owner``, ``lease_expires_at``) in a transaction
that first locks the job's model row, so that two jobs never run at once on one model and jobs of
a model run in submission order. A heartbeat thread renews the lease; every write the job makes
afterwards is fenced on still holding it. A job that raises :class:`JobFailed` fails at once (the
input is wrong, retrying cannot help); any other exception is retried until ``max_attempts``.
"""

from __future__ import annotations

import enum
import logging
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import session_scope
from app.orm import Job, Model, utcnow
from app.settings import get_settings
from workers.outcomes import on_job_ended

log = logging.getLogger("unlearnd.worker")

TERMINAL = ("succeeded", "failed", "canceled")


class ClaimOutcome(enum.Enum):
    DONE = "done"  # ran to an end (succeeded, failed or canceled)
    BUSY = "busy"  # the model is busy with another job: try again shortly
    SKIPPED = "skipped"  # nothing to do: unknown, finished, or leased by another worker
    RETRY = "retry"  # failed transiently; re-queued for another attempt


class JobFailed(Exception):
    """A permanent failure with a message that tells the user what to fix."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail, self.extra = detail, extra


class JobCanceled(Exception):
    """The job was canceled while running."""


class LeaseLost(Exception):
    """Another worker took the job over (our lease expired): stop without writing."""


def as_utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@dataclass
class JobContext:
    """What a running job may do: report progress, check for cancellation, fence its writes."""

    job_id: str
    worker_id: str
    lease_s: float
    cancel_event: threading.Event = field(default_factory=threading.Event)
    lost_event: threading.Event = field(default_factory=threading.Event)

    def report(self, stage: str, progress: float) -> None:
        self.check()
        with session_scope() as s:
            n = s.execute(
                update(Job)
                .where(Job.id == self.job_id, Job.lease_owner == self.worker_id)
                .where(Job.status == "running")
                .values(stage=stage, progress=max(0.0, min(1.0, progress)))
            ).rowcount
        if n == 0:
            self.lost_event.set()
            raise LeaseLost(self.job_id)

    def check(self) -> None:
        if self.lost_event.is_set():
            raise LeaseLost(self.job_id)
        if self.cancel_event.is_set():
            raise JobCanceled(self.job_id)

    def fence(self, session: Session) -> Job:
        """Lock the job row in ``session`` and verify we still hold the lease."""
        job = session.scalar(select(Job).where(Job.id == self.job_id).with_for_update())
        if job is None or job.lease_owner != self.worker_id or job.status != "running":
            raise LeaseLost(self.job_id)
        if job.cancel_requested:
            raise JobCanceled(self.job_id)
        return job


def claim(job_id: str, worker_id: str, lease_s: float) -> ClaimOutcome | None:
    """Try to lease the job. ``None`` means claimed; otherwise why not."""
    with session_scope() as s:
        model_id = s.scalar(select(Job.model_id).where(Job.id == job_id))
        if model_id is None:
            return ClaimOutcome.SKIPPED
        # Serialise claims per model: this UPDATE takes the model's row lock (SQLite: the write
        # lock is already held by BEGIN IMMEDIATE). Then re-read the job under its own lock.
        s.execute(update(Model).where(Model.id == model_id).values(lock_epoch=Model.lock_epoch + 1))
        job = s.scalar(
            select(Job)
            .where(Job.id == job_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if job is None or job.status in TERMINAL:
            return ClaimOutcome.SKIPPED
        now = utcnow()
        expires = as_utc(job.lease_expires_at)
        if job.status == "running" and expires is not None and expires > now:
            return ClaimOutcome.SKIPPED
        if job.cancel_requested:
            _finish(s, job, "canceled", error={"detail": "Canceled before it ran."})
            on_job_ended(s, job)
            return ClaimOutcome.DONE
        if job.attempts >= job.max_attempts:
            _finish(
                s,
                job,
                "failed",
                error={
                    "title": "Attempts exhausted",
                    "detail": f"The job was interrupted {job.attempts} times (worker lost?).",
                },
            )
            on_job_ended(s, job)
            return ClaimOutcome.DONE
        blocking = s.scalar(
            select(Job.id)
            .where(Job.model_id == job.model_id, Job.id != job.id)
            .where(
                ((Job.status == "running") & (Job.lease_expires_at > now))
                | (Job.status.in_(("queued", "running")) & (Job.created_at < job.created_at))
            )
            .limit(1)
        )
        if blocking is not None:
            # the message stays alive as a retry: keep the reconciler from sending another
            job.dispatched_at = now
            return ClaimOutcome.BUSY
        job.status = "running"
        job.lease_owner = worker_id
        job.lease_expires_at = now + timedelta(seconds=lease_s)
        job.attempts += 1
        job.started_at = job.started_at or now
        job.stage = "claimed"
        job.error = None
    return None


def _finish(
    s: Session,
    job: Job,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    job.status = status
    job.finished_at = utcnow()
    job.lease_owner = None
    job.lease_expires_at = None
    if result is not None:
        job.result = result
        job.progress = 1.0
        job.stage = "done"
    if error is not None:
        job.error = error
        job.stage = status


def _heartbeat(ctx: JobContext, stop: threading.Event) -> None:
    interval = max(ctx.lease_s / 3.0, 0.5)
    while not stop.wait(interval):
        try:
            with session_scope() as s:
                job = s.get(Job, ctx.job_id)
                if job is None or job.lease_owner != ctx.worker_id or job.status != "running":
                    ctx.lost_event.set()
                    return
                job.lease_expires_at = utcnow() + timedelta(seconds=ctx.lease_s)
                if job.cancel_requested:
                    ctx.cancel_event.set()
        except Exception:  # a missed beat is survivable; the lease is three beats long
            log.warning("heartbeat for job %s failed", ctx.job_id, exc_info=True)


def run_job_once(job_id: str, worker_id: str) -> ClaimOutcome:
    """Claim and execute one job; record the outcome in the database."""
    from workers.flows import execute  # imports torch: only in the worker

    settings = get_settings()
    outcome = claim(job_id, worker_id, settings.job_lease_s)
    if outcome is not None:
        return outcome
    ctx = JobContext(job_id=job_id, worker_id=worker_id, lease_s=settings.job_lease_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, stop), daemon=True)
    beat.start()
    try:
        execute(ctx)
        return ClaimOutcome.DONE
    except LeaseLost:
        log.warning("job %s: lease lost; another worker owns it now", job_id)
        return ClaimOutcome.SKIPPED
    except JobCanceled:
        _settle(ctx, "canceled", {"title": "Canceled", "detail": "Canceled while running."})
        return ClaimOutcome.DONE
    except JobFailed as exc:
        _settle(ctx, "failed", {"title": "Job failed", "detail": exc.detail, **exc.extra})
        return ClaimOutcome.DONE
    except Exception as exc:
        log.exception("job %s failed with an unexpected error", job_id)
        detail = f"{type(exc).__name__}: {exc}"
        return _retry_or_fail(ctx, detail, traceback.format_exc(limit=5))
    finally:
        stop.set()
        beat.join(timeout=5)


def _settle(ctx: JobContext, status: str, error: dict[str, Any]) -> None:
    with session_scope() as s:
        job = s.scalar(select(Job).where(Job.id == ctx.job_id).with_for_update())
        if job is None or job.lease_owner != ctx.worker_id:
            return
        _finish(s, job, status, error=error)
        on_job_ended(s, job)


def _retry_or_fail(ctx: JobContext, detail: str, trace: str) -> ClaimOutcome:
    with session_scope() as s:
        job = s.scalar(select(Job).where(Job.id == ctx.job_id).with_for_update())
        if job is None or job.lease_owner != ctx.worker_id:
            return ClaimOutcome.SKIPPED
        if job.attempts >= job.max_attempts:
            _finish(
                s,
                job,
                "failed",
                error={
                    "title": "Internal error",
                    "detail": f"The job failed {job.attempts} times; last error: {detail}",
                },
            )
            on_job_ended(s, job)
            return ClaimOutcome.DONE
        job.status = "queued"
        job.lease_owner = None
        job.lease_expires_at = None
        job.stage = "retrying"
        job.error = {"title": "Transient error, will retry", "detail": detail}
        log.debug("job %s will retry: %s", ctx.job_id, trace)
    from app.jobs import dispatch

    dispatch([ctx.job_id], countdown=2.0)
    return ClaimOutcome.RETRY
