"""Thin Celery tasks: everything they do lives in :mod:`workers.runner`."""

from __future__ import annotations

from celery import Task
from celery.signals import worker_process_init

from workers.celery_app import RUN_JOB, celery_app
from workers.runner import ClaimOutcome, run_job_once


@celery_app.task(name=RUN_JOB, bind=True, max_retries=None)
def run_job(self: Task, job_id: str) -> str:
    """Run job ``job_id`` if it can be claimed; retry later while its model is busy."""
    outcome = run_job_once(job_id, worker_id=f"{self.request.hostname}:{self.request.id}")
    if outcome is ClaimOutcome.BUSY:
        raise self.retry(countdown=1.0)
    return outcome.value


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    """Run one tiny update so the first real job does not pay torch's one-off set-up costs
    (about 2 s on a CPU for torch.func's first vmap/grad and the Woodbury path's compilation)."""
    import numpy as np

    from unlearning import (
        TrainingOptions,
        UnlearnOptions,
        build_factorization,
        train,
        unlearn,
    )

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(16, 3)), np.arange(16) % 2
    model, _ = train({"kind": "logistic_regression"}, X, y, 2, TrainingOptions(l2=1.0))
    fact = build_factorization(model, X, y)
    unlearn(model, X[1:], y[1:], X[:1], y[:1], X[:0], y[:0], UnlearnOptions(), factorization=fact)
