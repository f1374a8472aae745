"""The database is the source of truth: leases, bounded attempts, per-model serialisation,
reconciliation of lost messages and workers, at most one version per job, one line of versions."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError


@pytest.fixture
def model_id(backend) -> str:  # type: ignore[no-untyped-def]
    from app.db import session_scope
    from app.orm import Dataset, Model

    with session_scope() as s:
        ds = Dataset(tenant="t", name="d", kind="tabular", current_version=1)
        s.add(ds)
        s.flush()
        m = Model(
            tenant="t",
            name=f"m-{uuid.uuid4().hex[:6]}",
            dataset_id=ds.id,
            architecture={"kind": "logistic_regression"},
            training={},
        )
        s.add(m)
        s.flush()
        return m.id


def make_job(model_id: str, max_attempts: int = 3) -> str:
    from app.db import session_scope
    from app.jobs import new_job

    with session_scope() as s:
        job = new_job(s, tenant="t", kind="unlearn", model_id=model_id)
        job.max_attempts = max_attempts
        return job.id


def job_row(job_id: str):  # type: ignore[no-untyped-def]
    from app.db import session_scope
    from app.orm import Job

    with session_scope() as s:
        return s.get(Job, job_id)


def expire_lease(job_id: str) -> None:
    from app.db import session_scope
    from app.orm import Job, utcnow

    with session_scope() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_a_claimed_job_is_leased_to_one_worker(model_id):
    from workers.runner import ClaimOutcome, claim

    job = make_job(model_id)
    assert claim(job, "worker-a", lease_s=60) is None
    row = job_row(job)
    assert (row.status, row.lease_owner, row.attempts) == ("running", "worker-a", 1)
    # a duplicate message reaching another worker does nothing while the lease holds
    assert claim(job, "worker-b", lease_s=60) is ClaimOutcome.SKIPPED
    assert job_row(job).lease_owner == "worker-a"


def test_jobs_of_one_model_run_one_at_a_time_in_submission_order(model_id):
    from app.db import session_scope
    from app.orm import Job
    from workers.runner import ClaimOutcome, _finish, claim

    first, second = make_job(model_id), make_job(model_id)
    assert claim(second, "w", lease_s=60) is ClaimOutcome.BUSY  # the older job goes first
    assert claim(first, "w", lease_s=60) is None
    assert claim(second, "w2", lease_s=60) is ClaimOutcome.BUSY  # the model is busy
    with session_scope() as s:
        _finish(s, s.get(Job, first), "succeeded", result={})
    assert claim(second, "w2", lease_s=60) is None


def test_reconciler_requeues_a_lost_worker_and_fails_after_max_attempts(model_id):
    from workers.reconciler import reconcile_once
    from workers.runner import claim

    job = make_job(model_id, max_attempts=2)
    assert claim(job, "dead-worker", lease_s=60) is None
    expire_lease(job)
    counts = reconcile_once()
    row = job_row(job)
    assert counts["requeued"] >= 1
    assert (row.status, row.lease_owner, row.attempts) == ("queued", None, 1)
    assert row.dispatched_at is not None  # re-sent to the broker
    assert claim(job, "second-worker", lease_s=60) is None
    expire_lease(job)
    reconcile_once()
    row = job_row(job)
    assert row.status == "failed" and "lost 2 times" in row.error["detail"]


def test_reconciler_resends_a_job_whose_message_was_never_sent(model_id):
    from workers.reconciler import reconcile_once

    job = make_job(model_id)  # committed, never dispatched (as if the broker was down)
    assert job_row(job).dispatched_at is None
    reconcile_once()
    assert job_row(job).dispatched_at is not None


def test_a_job_creates_at_most_one_version_and_versions_form_a_line(model_id):
    from app.db import session_scope
    from app.orm import ModelVersion

    job_a, job_b = make_job(model_id), make_job(model_id)

    def add(version: int, job: str) -> None:
        with session_scope() as s:
            s.add(
                ModelVersion(
                    model_id=model_id,
                    version=version,
                    parent=version - 1 or None,
                    job_id=job,
                    dataset_version=1,
                    sha256="0" * 64,
                    size_bytes=0,
                )
            )

    add(1, job_a)
    with pytest.raises(IntegrityError):
        add(2, job_a)  # the same job again (a redelivered message)
    with pytest.raises(IntegrityError):
        add(1, job_b)  # a fork: a second version 1
    add(2, job_b)
    with session_scope() as s:
        versions = s.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.version)
        ).all()
    assert versions == [1, 2]


def test_a_canceled_queued_job_never_runs(model_id):
    from app.db import session_scope
    from app.orm import Job
    from workers.runner import ClaimOutcome, claim

    job = make_job(model_id)
    with session_scope() as s:
        s.get(Job, job).cancel_requested = True
    assert claim(job, "w", lease_s=60) is ClaimOutcome.DONE
    assert job_row(job).status == "canceled"
