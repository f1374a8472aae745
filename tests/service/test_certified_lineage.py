"""Certified removal through the API: objective perturbation from a secret seed, residual
accounting against the privacy budget σε/c, one retraining when it runs out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sqlalchemy as sa
from safetensors.numpy import load as load_safetensors
from svc import breast_cancer_split, record_ids, upload, wait_job

from unlearning.certification import draw_noise

pytestmark = pytest.mark.service

L2 = 10.0


def theta_of(blob: bytes) -> np.ndarray:
    w = load_safetensors(blob)
    return np.concatenate([w["weight"].ravel(), w["bias"].ravel()])


def gradient(theta: np.ndarray, X: np.ndarray, y: np.ndarray, b: np.ndarray) -> np.ndarray:
    """∇(Σ log-loss + λ/2‖θ‖² + bᵀθ), independently of the service."""
    Xt = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-Xt @ theta))
    return Xt.T @ (p - y) + L2 * theta + b


def seeds_in_store(service) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Noise seeds of every version, read from the database's keys and the store's bytes."""
    engine = sa.create_engine(service.env["UNLEARND_DATABASE_URL"].replace("+psycopg", "+psycopg"))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT mv.version, mv.noise_sha256 FROM model_versions mv JOIN models m "
                "ON m.id = mv.model_id WHERE m.name = 'cert' ORDER BY mv.version"
            )
        ).all()
    engine.dispose()
    out = {}
    for version, key in rows:
        path = service.data_dir / "artifacts" / "sha256" / key[:2] / key
        out[str(version)] = json.loads(path.read_text())["seed"]
    return out


def test_certified_lineage_spends_its_budget_then_retrains_once(admin, service):
    X, y, _, _ = breast_cancer_split(seed=21)
    ids = record_ids(len(y), "cert")
    card = upload(admin, "bc-cert", X=X, y=y, record_ids=ids)
    responses: list[str] = []

    r = admin.post(
        "/v1/models",
        json={
            "name": "cert",
            "dataset_id": card["id"],
            "architecture": {"kind": "logistic_regression"},
            "training": {"l2": L2},
            "certification": {"epsilon": 1.0, "delta": 1e-5, "capacity": 3},
        },
    )
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    responses.append(json.dumps(job))
    v1 = admin.get("/v1/models/cert/versions/1").json()
    responses.append(json.dumps(v1))
    cert = v1["certificate"]
    c = math.sqrt(2 * math.log(1.5 / 1e-5))
    assert cert["certified"] is True and cert["sigma_source"] == "chosen"
    assert cert["c"] == pytest.approx(c)
    assert cert["budget"] == pytest.approx(cert["sigma"] * 1.0 / c)
    assert cert["budget_used"] == pytest.approx(cert["training_residual"])
    assert "seed" not in json.dumps(cert)

    # the training residual is the exact gradient of the perturbed objective at version 1
    seeds = seeds_in_store(service)
    b = draw_noise(seeds["1"], X.shape[1] + 1, cert["sigma"]).numpy()
    theta1 = theta_of(admin.get("/v1/models/cert/versions/1/weights").content)
    assert np.linalg.norm(gradient(theta1, X, y, b)) == pytest.approx(
        cert["training_residual"], rel=1e-4, abs=1e-9
    )

    keep = np.ones(len(y), dtype=bool)
    previous, exhausted_at = cert, None
    for k in range(12):
        batch = ids[5 * k : 5 * k + 5].tolist()  # five records a request
        r = admin.post(
            "/v1/requests",
            headers={"Idempotency-Key": f"cert-{k}"},
            json={"model": "cert", "kind": "delete_records", "record_ids": batch},
        )
        job = wait_job(admin, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        responses.append(json.dumps(job))
        keep[5 * k : 5 * k + 5] = False
        version = job["result"]["model_version"]
        card_k = admin.get(f"/v1/models/cert/versions/{version}").json()
        responses.append(json.dumps(card_k))
        cert_k = card_k["certificate"]
        if job["result"]["metrics"].get("budget_exhausted"):
            charge = job["result"]["metrics"]["certification_charge"]["charge"]
            # it ran out exactly when the arithmetic says: the charge did not fit what was left
            assert previous["budget_used"] + charge > previous["budget"]
            assert job["result"]["method"] == "retrain"
            assert cert_k["lineage"] == previous["lineage"] + 1 and cert_k["residuals"] == []
            assert "budget exhausted" in cert_k["lineage_started_by"]
            exhausted_at = k
            seeds = seeds_in_store(service)
            assert seeds[str(version)] != seeds["1"]  # fresh noise
            previous = cert_k
            if k >= exhausted_at + 1:
                break
            continue
        # within budget: used grows by exactly this request's charge, and the exact residual
        # of the perturbed objective on the remaining data matches an independent computation
        assert "certification_charge" in job["result"]["metrics"], job["result"]
        charge = job["result"]["metrics"]["certification_charge"]["charge"]
        assert cert_k["budget_used"] == pytest.approx(previous["budget_used"] + charge)
        assert cert_k["budget_left"] == pytest.approx(cert_k["budget"] - cert_k["budget_used"])
        assert cert_k["budget_used"] <= cert_k["budget"]
        assert cert_k["residuals"][-1]["request_id"] == r.json()["id"]
        seeds = seeds_in_store(service)
        b = draw_noise(seeds[str(version)], X.shape[1] + 1, cert_k["sigma"]).numpy()
        theta = theta_of(admin.get(f"/v1/models/cert/versions/{version}/weights").content)
        exact = np.linalg.norm(gradient(theta, X[keep], y[keep], b))
        assert cert_k["residuals"][-1]["residual"] == pytest.approx(exact, rel=1e-4, abs=1e-9)
        assert exact <= cert_k["budget_used"]
        previous = cert_k
        if exhausted_at is not None:
            break
    assert exhausted_at is not None, "the budget never ran out"

    # exactly one retraining, recorded in the audit trail
    events = admin.get("/v1/audit", params={"model": "cert", "limit": 1000}).json()["items"]
    completed = [e for e in events if e["type"] == "request.completed"]
    assert sum(e["data"]["budget_exhausted"] for e in completed) == 1
    export = admin.get("/v1/audit/export").text
    responses.append(export)

    # the noise seeds appear nowhere outside the store
    everything = "\n".join(responses) + service.log_tail(100_000)
    engine = sa.create_engine(service.env["UNLEARND_DATABASE_URL"])
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            everything += "\n".join(
                str(row) for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
            )
    engine.dispose()
    for seed in set(seeds_in_store(service).values()):
        assert str(seed) not in everything
