"""API keys (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy import select

from app.audit import append_event
from app.deps import Admin, SessionDep, SettingsDep
from app.errors import NotFound
from app.orm import ApiKey, utcnow
from app.schemas import KeyCreate
from app.security import create_key

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def key_view(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "tenant": row.tenant,
        "scopes": row.scopes,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "revoked_at": row.revoked_at,
    }


@router.post("", status_code=201)
def create(
    body: KeyCreate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """Create a key; the secret is in the response only, never stored."""
    tenant = body.tenant or principal.tenant
    row, plaintext = create_key(
        session, settings.resolved_secret_key(), tenant, body.name, list(body.scopes)
    )
    append_event(
        session,
        settings.resolved_secret_key(),
        tenant=tenant,
        type="key.created",
        data={"key_id": row.id, "scopes": row.scopes, "by": principal.key_id},
    )
    session.commit()
    return {**key_view(row), "key": plaintext}


@router.get("")
def list_keys(principal: Admin, session: SessionDep) -> dict[str, Any]:
    rows = session.scalars(
        select(ApiKey).where(ApiKey.tenant == principal.tenant).order_by(ApiKey.created_at)
    ).all()
    return {"items": [key_view(r) for r in rows], "next_cursor": None}


@router.delete("/{key_id}", status_code=204)
def revoke(key_id: str, principal: Admin, session: SessionDep, settings: SettingsDep) -> Response:
    row = session.get(ApiKey, key_id)
    if row is None or row.tenant != principal.tenant:
        raise NotFound(f"No API key with id '{key_id}'.")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        append_event(
            session,
            settings.resolved_secret_key(),
            tenant=row.tenant,
            type="key.revoked",
            data={"key_id": row.id, "by": principal.key_id},
        )
        session.commit()
    return Response(status_code=204)
