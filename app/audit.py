"""The tamper-evident audit log: one hash chain over all events.

Each event's ``hash`` is SHA-256 over ``prev_hash`` and the canonical JSON of the event (sorted
keys, no whitespace, UTC timestamps with microseconds). Record and subject ids enter the log only
as keyed hashes (HMAC-SHA256 under the server secret, domain-separated), so the log proves what
was done to whom without holding the ids or the data. Appending locks the single
``audit_head`` row, so concurrent writers extend one chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.orm import AuditEvent, AuditHead, AuditSubject, utcnow

GENESIS = "0" * 64


def pseudonym(secret_key: bytes, kind: str, value: str) -> str:
    """Keyed hash of an identifier: HMAC-SHA256(secret, "kind:value") as hex."""
    return hmac.new(secret_key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def _iso(ts: datetime) -> str:
    if ts.tzinfo is None:  # SQLite returns naive datetimes; they are stored in UTC
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_document(ev: AuditEvent) -> dict[str, Any]:
    """The event as exported and as hashed (``hash`` itself excluded from the hash)."""
    return {
        "seq": ev.seq,
        "tenant": ev.tenant,
        "ts": _iso(ev.ts),
        "type": ev.type,
        "model": ev.model,
        "request_id": ev.request_id,
        "job_id": ev.job_id,
        "subject_hashes": list(ev.subject_hashes or []),
        "data": ev.data or {},
        "prev_hash": ev.prev_hash,
    }


def chain_hash(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def append_event(
    session: Session,
    secret_key: bytes,
    *,
    tenant: str,
    type: str,
    model: str | None = None,
    request_id: str | None = None,
    job_id: str | None = None,
    subject_ids: Iterable[str] = (),
    record_ids: Iterable[str] = (),
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (it commits with the caller's work)."""
    head = session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    payload = dict(data or {})
    records = sorted({pseudonym(secret_key, "record", r) for r in record_ids})
    if records:
        payload["record_hashes"] = records
        payload["n_records"] = len(records)
    subjects = sorted({pseudonym(secret_key, "subject", s) for s in subject_ids})
    ev = AuditEvent(
        seq=head.seq + 1,
        tenant=tenant,
        ts=utcnow(),
        type=type,
        model=model,
        request_id=request_id,
        job_id=job_id,
        subject_hashes=subjects,
        data=payload,
        prev_hash=head.hash,
    )
    ev.hash = chain_hash(event_document(ev))
    session.add(ev)
    session.flush()
    for s in subjects:
        session.add(AuditSubject(seq=ev.seq, subject_hash=s))
    head.seq, head.hash = ev.seq, ev.hash
    session.flush()
    return ev


def iter_events(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def verify_chain(session: Session) -> dict[str, Any]:
    """Recompute the whole chain. ``first_bad`` is the first sequence number whose link or
    content does not verify (``None`` when the chain is intact)."""
    prev, count, first_bad, expected_seq = GENESIS, 0, None, 1
    for ev in iter_events(session):
        count += 1
        ok = (
            ev.seq == expected_seq
            and ev.prev_hash == prev
            and chain_hash(event_document(ev)) == ev.hash
        )
        if not ok and first_bad is None:
            first_bad = ev.seq
        prev, expected_seq = ev.hash, ev.seq + 1
    head = session.get(AuditHead, 1)
    head_hash = head.hash if head else GENESIS
    if first_bad is None and head_hash != prev:
        first_bad = expected_seq  # events were removed from the end
    return {"ok": first_bad is None, "events": count, "head": head_hash, "first_bad": first_bad}
