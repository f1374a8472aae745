"""Typed dependencies: every route's signature says what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.errors import Forbidden, Unauthorized
from app.security import effective_scopes, lookup_key
from app.settings import Settings, get_settings


def get_session() -> Iterator[Session]:
    """One session per request. Routes commit explicitly before dispatching jobs; anything
    uncommitted is rolled back when the request ends."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"This operation needs an API key with scope '{scope}'.")


def get_principal(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
    row = lookup_key(session, settings.resolved_secret_key(), token.strip())
    if row is None:
        raise Unauthorized("The API key is unknown or revoked.")
    principal = Principal(row.id, row.tenant, frozenset(effective_scopes(row.scopes)))
    # End the read transaction now: on SQLite it holds the database lock, and a streaming
    # response outlives the route.
    session.rollback()
    return principal


def require(scope: str):  # type: ignore[no-untyped-def]
    def _dep(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(scope)
        return principal

    return _dep


Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("submit"))]
Auditor = Annotated[Principal, Depends(require("audit"))]
Admin = Annotated[Principal, Depends(require("admin"))]
