"""API keys over HTTP: created by an admin, shown once, scoped, revocable."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from svc import assert_problem, record_ids, uid, upload

pytestmark = pytest.mark.service


def create_key(admin: httpx.Client, scopes: list[str], **extra) -> dict:
    r = admin.post("/v1/keys", json={"name": uid("key"), "scopes": scopes, **extra})
    assert r.status_code == 201, r.text
    return r.json()


def test_key_lifecycle(admin, service):
    name = uid("ci-bot")
    r = admin.post("/v1/keys", json={"name": name, "scopes": ["submit"]})
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["key"]
    assert secret.startswith("unl_") and len(secret) >= 32
    assert created["prefix"] == secret[:8]
    assert (created["name"], created["scopes"], created["revoked_at"]) == (name, ["submit"], None)

    # the plaintext is shown once: never in the listing
    listing = admin.get("/v1/keys")
    assert listing.status_code == 200, listing.text
    assert secret not in listing.text
    mine = [k for k in listing.json()["items"] if k["id"] == created["id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert mine[0]["prefix"] == secret[:8]

    # the new key works, within its scopes
    with service.client(secret) as c:
        assert c.get("/v1/datasets").status_code == 200
        card = upload(
            c,
            uid("by-new-key"),
            X=np.eye(4),
            y=np.array([0, 1, 0, 1]),
            record_ids=record_ids(4, uid("k")),
        )
        assert c.get(f"/v1/datasets/{card['id']}").status_code == 200

    # revoked: 204, then 401 for the key; revoking again is harmless
    assert admin.delete(f"/v1/keys/{created['id']}").status_code == 204
    with service.client(secret) as c:
        r = c.get("/v1/datasets")
    assert_problem(r, 401, "revoked")
    assert r.headers["www-authenticate"].lower().startswith("bearer")
    assert admin.delete(f"/v1/keys/{created['id']}").status_code == 204
    listed = {k["id"]: k for k in admin.get("/v1/keys").json()["items"]}
    assert listed[created["id"]]["revoked_at"] is not None

    # the trail records creation and revocation, never the secret
    export = admin.get("/v1/audit/export").text
    mine = [e for e in map(json.loads, export.splitlines()) if created["id"] in json.dumps(e)]
    assert [e["type"] for e in mine] == ["key.created", "key.revoked"]
    assert secret not in export


def test_key_management_needs_admin(admin, service):
    submit_key = create_key(admin, ["submit"])
    victim = create_key(admin, ["read"])
    with service.client(submit_key["key"]) as c:
        assert_problem(c.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}), 403, "admin")
        assert_problem(c.get("/v1/keys"), 403, "admin")
        assert_problem(c.delete(f"/v1/keys/{victim['id']}"), 403, "admin")
    # the victim key still works
    with service.client(victim["key"]) as c:
        assert c.get("/v1/datasets").status_code == 200
    admin_key = create_key(admin, ["admin"])
    with service.client(admin_key["key"]) as c:
        r = c.post("/v1/keys", json={"name": uid("by-second-admin"), "scopes": ["read"]})
        assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "x", "scopes": ["superuser"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "", "scopes": ["read"]}, "name"),
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "tenant": "bad tenant"}, "tenant"),
        ({"name": "x", "scopes": ["read"], "expires": "never"}, "expires"),
    ],
)
def test_bad_key_body_is_422(admin, body, fragment):
    before = {k["id"] for k in admin.get("/v1/keys").json()["items"]}
    assert_problem(admin.post("/v1/keys", json=body), 422, fragment)
    assert {k["id"] for k in admin.get("/v1/keys").json()["items"]} == before


def test_tenants_are_isolated(admin, service):
    card = upload(
        admin,
        uid("tenant-a"),
        X=np.eye(4),
        y=np.array([0, 1, 0, 1]),
        record_ids=record_ids(4, uid("t")),
    )
    other = create_key(admin, ["read"], tenant=uid("tenant-b"))
    with service.client(other["key"]) as c:
        assert_problem(c.get(f"/v1/datasets/{card['id']}"), 404, card["id"])
        assert card["id"] not in {d["id"] for d in c.get("/v1/datasets").json()["items"]}
