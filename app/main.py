"""The FastAPI application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter

from app.errors import install_problem_handlers
from app.routes import audit, datasets, health, jobs, keys, models, requests
from app.settings import get_settings

log = logging.getLogger("unlearnd")

HTTP_REQUESTS = Counter(
    "unlearnd_http_requests",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=CollectorRegistry(),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    reconciler = None
    if settings.run_reconciler:
        from workers.reconciler import Reconciler

        reconciler = Reconciler(settings.reconcile_interval_s)
        reconciler.start()
    yield
    if reconciler is not None:
        reconciler.stop()


def create_app() -> FastAPI:
    app = FastAPI(
        title="unlearnd",
        version="0.1.0",
        description="Machine unlearning as a service: erase or rectify training data in "
        "trained models (Warnecke et al., NDSS 2023).",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    for module in (health, datasets, models, requests, jobs, audit, keys):
        app.include_router(module.router)

    @app.middleware("http")
    async def count_requests(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        return response

    return app


app = create_app()
