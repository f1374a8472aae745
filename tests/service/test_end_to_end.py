"""The foundation walk-through (issue 2, steps 1-7) over real HTTP against ``unlearnd run``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from sklearn.linear_model import LogisticRegression
from svc import breast_cancer_split, record_ids, subject_ids, upload, wait_job

pytestmark = pytest.mark.service

L2 = 1.0


def theta_of(weights: dict[str, np.ndarray]) -> np.ndarray:
    """Flat θ = [w (d), b] of a binary logistic regression."""
    return np.concatenate([weights["weight"].ravel(), weights["bias"].ravel()])


def augment(X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((X.shape[0], 1))])


def independent_newton_deletion(
    theta: np.ndarray, X_keep: np.ndarray, X_del: np.ndarray, y_del: np.ndarray, l2: float
) -> np.ndarray:
    """θ* − H⁻¹Δ written out in NumPy (sum convention): H = Σ_keep p(1-p) x̃x̃ᵀ + λI,
    Δ = −Σ_del (p − y) x̃."""
    Xk, Xd = augment(X_keep), augment(X_del)
    pk = 1 / (1 + np.exp(-Xk @ theta))
    H = (Xk * (pk * (1 - pk))[:, None]).T @ Xk + l2 * np.eye(len(theta))
    pd = 1 / (1 + np.exp(-Xd @ theta))
    delta = -((pd - y_del)[:, None] * Xd).sum(0)
    return theta - np.linalg.solve(H, delta)


def sklearn_retrain(X: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Independent optimum of Σℓ + (λ/2)‖θ‖² (bias regularised: a ones column, no intercept)."""
    clf = LogisticRegression(C=1.0 / l2, fit_intercept=False, tol=1e-12, max_iter=100_000)
    clf.fit(augment(X), y)
    return clf.coef_.ravel()


def accuracy(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    return float(((augment(X) @ theta > 0).astype(int) == y).mean())


def test_deletion_request_becomes_a_new_model_version(admin, service):
    X, y, X_test, y_test = breast_cancer_split()
    ids, subjects = record_ids(len(y)), subject_ids(len(y))

    # 1. upload
    card = upload(admin, "breast-cancer", X=X, y=y, record_ids=ids, subject_ids=subjects)
    assert (card["n_records"], card["n_features"], card["version"]) == (455, 30, 1)

    # 2.-3. train version 1 and poll
    r = admin.post(
        "/v1/models",
        json={
            "name": "bc-e2e",
            "dataset_id": card["id"],
            "architecture": {"kind": "logistic_regression"},
            "training": {"l2": L2, "seed": 0},
        },
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['job_id']}"
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["metrics"]["grad_norm"] < 1e-6
    v1 = admin.get("/v1/models/bc-e2e/versions/1").json()
    assert v1["parent"] is None and v1["job_id"] == job["id"]
    w1 = admin.get("/v1/models/bc-e2e/versions/1/weights")
    assert w1.status_code == 200 and w1.headers["etag"].strip('"') == v1["sha256"]
    theta_star = theta_of(load_safetensors(w1.content))
    # version 1 is the optimum of the objective: matches scikit-learn
    theta_sk = sklearn_retrain(X, y, L2)
    assert np.linalg.norm(theta_star - theta_sk) <= 1e-5 * np.linalg.norm(theta_sk)

    # 4. GDPR deletion by record ids (1% of the records)
    rng = np.random.default_rng(1)
    rows = np.sort(rng.choice(len(y), size=5, replace=False))
    body = {
        "model": "bc-e2e",
        "kind": "delete_records",
        "record_ids": ids[rows].tolist(),
        "requester": "dpo@example.com",
        "legal_basis": "GDPR Art. 17",
        "reference": "ticket-42",
    }
    r = admin.post("/v1/requests", json=body, headers={"Idempotency-Key": "e2e-delete-1"})
    assert r.status_code == 202, r.text
    submitted = r.json()
    assert r.headers["location"] == f"/v1/jobs/{submitted['job_id']}"

    # 5. poll; version 2 (parent 1) is the exact second-order update
    job = wait_job(admin, submitted["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["model_version"] == 2 and job["result"]["method"] == "second_order"
    v2 = admin.get("/v1/models/bc-e2e/versions/2").json()
    assert v2["parent"] == 1 and v2["request_ids"] == [submitted["id"]]
    theta_u = theta_of(load_safetensors(admin.get("/v1/models/bc-e2e/versions/2/weights").content))
    keep = np.setdiff1d(np.arange(len(y)), rows)
    expected = independent_newton_deletion(theta_star, X[keep], X[rows], y[rows], L2)
    np.testing.assert_allclose(theta_u, expected, rtol=1e-8, atol=1e-10)
    theta_r = sklearn_retrain(X[keep], y[keep], L2)
    assert np.linalg.norm(theta_u - theta_r) <= 1e-2 * np.linalg.norm(theta_star - theta_r)
    assert abs(accuracy(theta_u, X_test, y_test) - accuracy(theta_r, X_test, y_test)) <= 1e-3
    req = admin.get(f"/v1/requests/{submitted['id']}").json()
    assert req["status"] == "succeeded" and req["legal_basis"] == "GDPR Art. 17"

    # 6. the records are gone from the stored dataset (a new version; the old one is erased)
    ds = admin.get(f"/v1/datasets/{card['id']}").json()
    assert ds["version"] == 2 and ds["n_records"] == 450
    assert ds["versions"][0]["purged"] is True
    assert not list(service.data_dir.rglob(card["sha256"]))
    again = admin.post(
        "/v1/requests",
        json={**body, "reference": "again"},
        headers={"Idempotency-Key": "e2e-delete-2"},
    )
    assert again.status_code == 422 and ids[rows[0]] in again.json()["detail"]

    # 7. the audit trail: events of the request, keyed hashes only, chain verifies
    events = admin.get("/v1/audit", params={"request": submitted["id"]}).json()["items"]
    assert [e["type"] for e in events] == ["request.received", "request.completed"]
    assert events[1]["data"]["model_version"] == 2
    assert len(events[1]["data"]["record_hashes"]) == 5
    by_subject = admin.get("/v1/audit", params={"subject": subjects[rows[0]]}).json()["items"]
    assert submitted["id"] in {e["request_id"] for e in by_subject}
    export = admin.get("/v1/audit/export")
    assert export.status_code == 200
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [e["seq"] for e in lines] == sorted(e["seq"] for e in lines)
    for secret in [*ids[rows].tolist(), subjects[rows[0]], "dpo@example.com", "ticket-42"]:
        assert secret not in export.text
    verdict = admin.get("/v1/audit/verify").json()
    assert verdict["ok"] is True and verdict["first_bad"] is None
    assert verdict["events"] >= len(lines) and verdict["head"] == lines[-1]["hash"]


def test_deletion_by_subject_removes_all_their_records(admin):
    X, y, _, _ = breast_cancer_split(seed=2)
    ids, subjects = record_ids(len(y), "s"), subject_ids(len(y), per_subject=4)
    card = upload(admin, "bc-subjects", X=X, y=y, record_ids=ids, subject_ids=subjects)
    r = admin.post(
        "/v1/models",
        json={
            "name": "bc-subj",
            "dataset_id": card["id"],
            "architecture": {"kind": "logistic_regression"},
        },
    )
    assert wait_job(admin, r.json()["job_id"])["status"] == "succeeded"
    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "subj-1"},
        json={
            "model": "bc-subj",
            "kind": "delete_records",
            "subject_id": "subject-0007",
            "legal_basis": "CCPA 1798.105",
        },
    )
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["metrics"]["n_affected"] == 4
    assert admin.get(f"/v1/datasets/{card['id']}").json()["n_records"] == len(y) - 4
    events = admin.get("/v1/audit", params={"subject": "subject-0007"}).json()["items"]
    assert {e["type"] for e in events} >= {"request.received", "request.completed"}
