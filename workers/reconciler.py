"""The reconciler: repairs what a lost message or a dead worker left behind.

- a ``running`` job whose lease expired goes back to ``queued`` (or ``failed`` once its attempts
  are used up) and is re-sent;
- a ``queued`` job not dispatched within ``redispatch_after_s`` is re-sent (duplicates are
  harmless: a job runs only under a lease and creates at most one version);
- superseded dataset versions are erased from the store.

It runs as a thread in every API process (``UNLEARND_RUN_RECONCILER``); several copies are safe.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import or_, select

from app.db import session_scope
from app.jobs import dispatch
from app.orm import Job, utcnow
from app.settings import get_settings
from workers.outcomes import on_job_ended, purge_superseded_datasets

log = logging.getLogger("unlearnd.reconciler")


def reconcile_once() -> dict[str, int]:
    """One pass; returns counts of what it did."""
    settings = get_settings()
    now = utcnow()
    requeued: list[str] = []
    failed = 0
    with session_scope() as s:
        expired = s.scalars(
            select(Job).where(Job.status == "running", Job.lease_expires_at < now).with_for_update()
        ).all()
        for job in expired:
            job.lease_owner = None
            job.lease_expires_at = None
            if job.attempts >= job.max_attempts:
                job.status, job.finished_at, job.stage = "failed", now, "failed"
                job.error = {
                    "title": "Attempts exhausted",
                    "detail": f"The worker running this job was lost {job.attempts} times.",
                }
                on_job_ended(s, job)
                failed += 1
            else:
                job.status, job.stage = "queued", "requeued"
                requeued.append(job.id)
        cutoff = now - timedelta(seconds=settings.redispatch_after_s)
        stale = s.scalars(
            select(Job.id).where(
                Job.status == "queued",
                or_(Job.dispatched_at.is_(None), Job.dispatched_at < cutoff),
            )
        ).all()
    to_send = sorted(set(requeued) | set(stale))
    if to_send:
        dispatch(to_send)
    purged = purge_superseded_datasets()
    return {
        "requeued": len(requeued),
        "failed": failed,
        "redispatched": len(to_send),
        "purged": purged,
    }


class Reconciler(threading.Thread):
    """Calls :func:`reconcile_once` every ``interval_s`` seconds until stopped."""

    def __init__(self, interval_s: float) -> None:
        super().__init__(name="unlearnd-reconciler", daemon=True)
        self.interval_s = interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                counts = reconcile_once()
                if any(counts.values()):
                    log.info("reconciler: %s", counts)
            except Exception:
                log.warning("reconciler pass failed", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
