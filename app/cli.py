"""``unlearnd`` command line: migrate, bootstrap, api, worker, reconcile, and ``run`` (all in one).

``unlearnd run`` is the embedded mode: it applies the migrations, creates and prints the
bootstrap admin key on first start, starts one Celery worker as a child process and serves the
API with uvicorn; stopping it (Ctrl-C / SIGTERM) stops both.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.settings import get_settings

log = logging.getLogger("unlearnd")


def migrate(wait_s: float = 60.0) -> None:
    """``alembic upgrade head``, waiting up to ``wait_s`` for the database to accept connections."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import text

    from app.db import get_engine

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"database not reachable: {exc}") from exc
            time.sleep(1.0)
    cfg = Config()
    cfg.set_main_option(
        "script_location", str(Path(__file__).resolve().parent.parent / "migrations")
    )
    cfg.attributes["url"] = settings.resolved_database_url
    command.upgrade(cfg, "head")


def bootstrap() -> None:
    from app.db import session_scope
    from app.security import ensure_bootstrap_admin_key

    settings = get_settings()
    with session_scope() as s:
        key = ensure_bootstrap_admin_key(s, settings)
    path = settings.data_dir / "bootstrap_admin_key"
    if key:
        print(f"unlearnd: bootstrap admin key: {key}", flush=True)
        print(f"unlearnd: (also written to {path}, mode 0600)", flush=True)
    else:
        print(
            f"unlearnd: admin key already set up (see {path} or UNLEARND_BOOTSTRAP_ADMIN_KEY)",
            flush=True,
        )


def worker_command(concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    # solo pool: one job at a time per process, no fork after torch/CUDA initialisation.
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app:celery_app",
        "worker",
        "-Q",
        get_settings().queue,
        "-P",
        "solo",
        "-c",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]


def api(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run(
        "app.main:app", host=host, port=port, workers=workers, log_level="info", proxy_headers=True
    )


def run(host: str, port: int) -> None:
    migrate()
    bootstrap()
    worker = subprocess.Popen(worker_command(), env=os.environ.copy())
    print(
        f"unlearnd: API on http://{host}:{port} (docs at /docs), worker pid {worker.pid}",
        flush=True,
    )

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        api(host, port)
    except KeyboardInterrupt:
        pass
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="unlearnd", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="embedded mode: migrate, bootstrap, worker + API")
    p_api = sub.add_parser("api", help="serve the API (production: behind a load balancer)")
    for p in (p_run, p_api):
        p.add_argument("--host", default=settings.host)
        p.add_argument("--port", type=int, default=settings.port)
    p_api.add_argument("--workers", type=int, default=1)
    p_worker = sub.add_parser("worker", help="a Celery worker on queue UNLEARND_QUEUE")
    p_worker.add_argument("--loglevel", default="INFO")
    sub.add_parser("migrate", help="alembic upgrade head (waits for the database)")
    sub.add_parser("bootstrap", help="create/print the bootstrap admin key")
    sub.add_parser("reconcile", help="one reconciler pass")
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run(args.host, args.port)
    elif args.cmd == "api":
        api(args.host, args.port, args.workers)
    elif args.cmd == "worker":
        os.execv(sys.executable, worker_command(loglevel=args.loglevel))
    elif args.cmd == "migrate":
        migrate()
    elif args.cmd == "bootstrap":
        bootstrap()
    elif args.cmd == "reconcile":
        from workers.reconciler import reconcile_once

        print(reconcile_once())


if __name__ == "__main__":
    main()
