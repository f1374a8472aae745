"""The audit trail: filtered listing, JSONL export, chain verification."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import Select, select

from app.audit import event_document, pseudonym, verify_chain
from app.db import get_sessionmaker
from app.deps import Auditor, SessionDep, SettingsDep
from app.lookups import cursor_int, decode_cursor, encode_cursor
from app.orm import AuditEvent, AuditSubject

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def event_view(ev: AuditEvent) -> dict[str, Any]:
    doc = event_document(ev)
    doc["hash"] = ev.hash
    return doc


def _filtered(
    tenant: str,
    secret: bytes,
    model: str | None,
    subject: str | None,
    request: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[tuple[AuditEvent]]:
    q = select(AuditEvent).where(AuditEvent.tenant == tenant)
    if model:
        q = q.where(AuditEvent.model == model)
    if request:
        q = q.where(AuditEvent.request_id == request)
    if subject:
        q = q.join(AuditSubject, AuditSubject.seq == AuditEvent.seq).where(
            AuditSubject.subject_hash == pseudonym(secret, "subject", subject)
        )
    if since:
        q = q.where(AuditEvent.ts >= since)
    if until:
        q = q.where(AuditEvent.ts < until)
    return q


@router.get("")
def list_events(
    principal: Auditor,
    session: SessionDep,
    settings: SettingsDep,
    model: str | None = None,
    subject: Annotated[str | None, Query(description="a subject id; matched by keyed hash")] = None,
    request: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    q = _filtered(
        principal.tenant, settings.resolved_secret_key(), model, subject, request, since, until
    )
    pos = decode_cursor(cursor)
    after = cursor_int(pos, "seq")
    if after is not None:
        q = q.where(AuditEvent.seq > after)
    rows = session.scalars(q.order_by(AuditEvent.seq).limit(limit + 1)).all()
    nxt = encode_cursor({"seq": rows[limit - 1].seq}) if len(rows) > limit else None
    return {"items": [event_view(e) for e in rows[:limit]], "next_cursor": nxt}


@router.get("/export")
def export_events(
    principal: Auditor,
    settings: SettingsDep,
    model: str | None = None,
    subject: str | None = None,
    request: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """All matching events as JSON lines, oldest first, each with its chain hash."""
    q = _filtered(
        principal.tenant, settings.resolved_secret_key(), model, subject, request, since, until
    )

    def lines() -> Iterator[bytes]:
        session = get_sessionmaker()()
        try:
            last = 0
            while True:
                rows = session.scalars(
                    q.where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(1000)
                ).all()
                session.rollback()
                if not rows:
                    return
                for ev in rows:
                    yield (json.dumps(event_view(ev), sort_keys=True) + "\n").encode()
                last = rows[-1].seq
        finally:
            session.close()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )


@router.get("/verify")
def verify(principal: Auditor, session: SessionDep) -> dict[str, Any]:
    """Recompute the whole hash chain (all tenants share one chain)."""
    return verify_chain(session)
