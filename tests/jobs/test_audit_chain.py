"""The audit log is a hash chain: any edit, insertion or truncation is detected."""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import delete, select, update


def append(n: int) -> list[int]:
    from app.audit import append_event
    from app.db import session_scope

    seqs = []
    with session_scope() as s:
        for i in range(n):
            ev = append_event(
                s,
                b"k",
                tenant="t",
                type="test.event",
                model="m",
                subject_ids=[f"subject-{i}"],
                record_ids=[f"rec-{i}"],
                data={"i": i},
            )
            seqs.append(ev.seq)
    return seqs


def verify() -> dict:
    from app.audit import verify_chain
    from app.db import session_scope

    with session_scope() as s:
        return verify_chain(s)


def test_identifiers_are_stored_as_keyed_hashes_only(backend):
    from app.db import session_scope
    from app.orm import AuditEvent

    seq = append(1)[0]
    with session_scope() as s:
        ev = s.get(AuditEvent, seq)
        expected = hmac.new(b"k", b"record:rec-0", hashlib.sha256).hexdigest()
        assert ev.data["record_hashes"] == [expected]
        assert "rec-0" not in str(ev.data) and "subject-0" not in str(ev.subject_hashes)


def test_an_edited_event_breaks_the_chain_at_that_event(backend):
    from app.db import session_scope
    from app.orm import AuditEvent

    seqs = append(3)
    assert verify()["ok"] is True
    with session_scope() as s:
        s.execute(update(AuditEvent).where(AuditEvent.seq == seqs[1]).values(data={"i": 99}))
    result = verify()
    assert result["ok"] is False and result["first_bad"] == seqs[1]
    with session_scope() as s:  # restore for the next test
        s.execute(
            update(AuditEvent)
            .where(AuditEvent.seq == seqs[1])
            .values(
                data={
                    "i": 1,
                    "n_records": 1,
                    "record_hashes": [hmac.new(b"k", b"record:rec-1", hashlib.sha256).hexdigest()],
                }
            )
        )
    assert verify()["ok"] is True


def test_a_removed_last_event_is_detected(backend):
    from app.db import session_scope
    from app.orm import AuditEvent, AuditSubject

    seqs = append(2)
    with session_scope() as s:
        s.execute(delete(AuditSubject).where(AuditSubject.seq == seqs[-1]))
        s.execute(delete(AuditEvent).where(AuditEvent.seq == seqs[-1]))
        remaining = s.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc()).limit(1))
    result = verify()
    assert result["ok"] is False and result["first_bad"] == remaining + 1
