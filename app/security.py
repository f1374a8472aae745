"""API keys: random secrets shown once, stored only as HMAC-SHA256 hashes, with scopes.

Scopes: ``admin`` (everything, including keys), ``submit`` (upload data, train models, submit
and cancel requests), ``read`` (datasets, models, jobs, weights, scoring), ``audit`` (the audit
trail). ``admin`` implies every scope; ``submit`` and ``audit`` imply ``read``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.orm import ApiKey, utcnow
from app.settings import Settings

SCOPES = ("admin", "submit", "read", "audit")
_IMPLIED = {"admin": set(SCOPES), "submit": {"submit", "read"}, "audit": {"audit", "read"}}


def effective_scopes(scopes: list[str]) -> set[str]:
    out: set[str] = set()
    for scope in scopes:
        out |= _IMPLIED.get(scope, {scope})
    return out


def hash_key(secret_key: bytes, api_key: str) -> str:
    return hmac.new(secret_key, api_key.encode(), hashlib.sha256).hexdigest()


def generate_key() -> str:
    return "unl_" + secrets.token_urlsafe(32)


def create_key(
    session: Session,
    secret_key: bytes,
    tenant: str,
    name: str,
    scopes: list[str],
    plaintext: str | None = None,
) -> tuple[ApiKey, str]:
    """Insert a key row; return it and the plaintext (shown to the caller once)."""
    plaintext = plaintext or generate_key()
    row = ApiKey(
        tenant=tenant,
        name=name,
        prefix=plaintext[:8],
        key_hash=hash_key(secret_key, plaintext),
        scopes=scopes,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return row, plaintext


def lookup_key(session: Session, secret_key: bytes, plaintext: str) -> ApiKey | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret_key, plaintext)))
    if row is None or row.revoked_at is not None:
        return None
    return row


def ensure_bootstrap_admin_key(session: Session, settings: Settings) -> str | None:
    """Create the bootstrap admin key if needed; return its plaintext when newly created.

    With ``UNLEARND_BOOTSTRAP_ADMIN_KEY`` set, that key is registered (if not yet). Otherwise a
    key is generated on first start only. The plaintext is also written to
    ``$UNLEARND_DATA_DIR/bootstrap_admin_key`` with mode 0600.
    """
    secret_key = settings.resolved_secret_key()
    wanted = settings.bootstrap_admin_key
    if wanted:
        if session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret_key, wanted))):
            return None
    elif session.scalar(select(ApiKey.id).where(ApiKey.name == "bootstrap-admin")):
        return None
    _, plaintext = create_key(
        session, secret_key, "default", "bootstrap-admin", ["admin"], plaintext=wanted
    )
    _write_private(settings.data_dir / "bootstrap_admin_key", plaintext + "\n")
    return plaintext


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
