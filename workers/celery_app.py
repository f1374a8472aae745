"""The Celery application.

Airflow's defaults: JSON only, prefetch 1, late acks, rejected back to the queue when a worker
dies, a Redis visibility timeout longer than the longest job. No result backend: the database's
``jobs`` table is the source of truth for job state, the broker only carries "run job <id>".

Embedded mode uses kombu's SQLAlchemy transport over a SQLite file next to the database (no extra
process, survives restarts; messages taken by a worker that then crashes are recovered by the
reconciler, which re-sends jobs whose lease expired).
"""

from __future__ import annotations

from celery import Celery

from app.settings import get_settings

RUN_JOB = "unlearnd.run_job"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("unlearnd", broker=settings.resolved_broker_url)
    transport_options: dict[str, object] = {}
    if settings.resolved_broker_url.startswith("redis"):
        transport_options["visibility_timeout"] = settings.broker_visibility_timeout_s
    else:
        from workers.broker import install

        install()
        transport_options["polling_interval"] = 0.1
        # Passed on to create_engine: wait on SQLite's lock rather than fail.
        transport_options["connect_args"] = {"timeout": 30}
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        imports=["workers.tasks"],
    )
    return app


celery_app = make_celery()
