"""One error type per failure, each mapped to one RFC 9457 ``application/problem+json`` response.

Raise a :class:`Problem` subclass anywhere in a request; the handlers installed by
:func:`install_problem_handlers` render it. Unexpected exceptions become a 500 problem (and are
logged): a 500 is always a bug.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

log = logging.getLogger("unlearnd.errors")

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error the caller can act on. ``detail`` must say what to fix."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "The API key lacks the required scope"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Upload too large"


class InvalidInput(Problem):
    status, slug, title = 422, "invalid-input", "Invalid input"


def problem_response(
    problem: Problem, request: Request | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if problem.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    instance = request.url.path if request is not None else None
    return JSONResponse(
        problem.body(instance),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _allowed_methods(request: Request) -> list[str]:
    """Methods of every documented operation whose path template matches the request's path."""
    app = request.app
    table = getattr(app.state, "allowed_methods", None)
    if table is None:
        table = [
            (compile_path(path)[0], {m.upper() for m in ops})
            for path, ops in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = table
    path = request.url.path
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


def install_problem_handlers(app: FastAPI) -> None:
    """Render every error of ``app`` as problem+json."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "location": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5])
        return problem_response(
            InvalidInput(f"The request does not match the schema: {summary}", errors=errors),
            request,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        problem = Problem(str(exc.detail))
        problem.status = exc.status_code
        problem.slug = "not-found" if exc.status_code == 404 else f"http-{exc.status_code}"
        problem.title = {404: "Not found", 405: "Method not allowed"}.get(
            exc.status_code, "HTTP error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            problem.detail = f"No route {request.method} {request.url.path}; see /docs."
        elif exc.status_code == 405:
            # Starlette names only the first route that matched the path; list them all.
            allowed = _allowed_methods(request)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                problem.detail = (
                    f"{request.method} is not allowed on {request.url.path}; "
                    f"use {headers['Allow']}."
                )
        return problem_response(problem, request, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem("An unexpected error occurred; it has been logged.")
        problem.status, problem.slug, problem.title = 500, "internal-error", "Internal error"
        return problem_response(problem, request)
