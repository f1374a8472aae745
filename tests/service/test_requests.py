"""Unlearning requests over HTTP: idempotency, the correction kinds end to end, job results,
request state, cancellation of ended jobs and scoring."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from svc import assert_problem, breast_cancer_split, record_ids, train_model, uid, upload, wait_job

pytestmark = pytest.mark.service

L2 = 10.0


@pytest.fixture
def model(admin) -> dict:
    """A fresh logistic model on its own copy of breast cancer (features named), version 1."""
    X, y, _, _ = breast_cancer_split(seed=4)
    ids = record_ids(len(y), uid("req"))
    names = np.array([f"feat_{j}" for j in range(X.shape[1])])
    card = upload(admin, uid("req-bc"), X=X, y=y, record_ids=ids, feature_names=names)
    name = uid("req-model")
    train_model(admin, name, card["id"], l2=L2)
    return {
        "name": name,
        "dataset": card,
        "X": X,
        "y": y,
        "ids": ids.tolist(),
        "features": names.tolist(),
    }


def submit(client: httpx.Client, body: dict, key: str | None = None) -> httpx.Response:
    return client.post("/v1/requests", json=body, headers={"Idempotency-Key": key or uid("idem")})


def weights(client: httpx.Client, name: str, version: int) -> dict[str, np.ndarray]:
    r = client.get(f"/v1/models/{name}/versions/{version}/weights")
    assert r.status_code == 200, r.text
    return load_safetensors(r.content)


def proba(client: httpx.Client, name: str, version: int, X: np.ndarray) -> np.ndarray:
    r = client.post(f"/v1/models/{name}/versions/{version}/score", json={"X": X.tolist()})
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["probabilities"])


def run_request(client: httpx.Client, body: dict) -> tuple[dict, dict]:
    """Submit, check the 202 contract, wait; return (submission, finished job)."""
    r = submit(client, body)
    assert r.status_code == 202, r.text
    sub = r.json()
    assert {"id", "job_id", "status"} <= set(sub)
    assert r.headers["location"] == f"/v1/jobs/{sub['job_id']}"
    job = wait_job(client, sub["job_id"])
    assert job["status"] == "succeeded", job
    assert job["kind"] == "unlearn" and job["progress"] == pytest.approx(1.0)
    return sub, job


def assert_new_version(client: httpx.Client, m: dict, sub: dict, job: dict) -> dict:
    """Version 2 with parent 1, the evidence in the job result, a new dataset version."""
    result = job["result"]
    assert result["model_version"] == 2
    assert result["method"] == "second_order"
    metrics = result["metrics"]
    assert metrics["update_norm"] > 0
    assert metrics["gradient_residual"] >= 0
    assert metrics["gradient_residual"] < metrics["gradient_residual_before"]
    for when in ("fidelity_before", "fidelity_after"):
        assert {"train", "affected_original"} <= set(metrics[when])
        assert 0 <= metrics[when]["train"]["accuracy"] <= 1
    v2 = client.get(f"/v1/models/{m['name']}/versions/2").json()
    assert v2["parent"] == 1 and v2["job_id"] == job["id"]
    assert v2["request_ids"] == [sub["id"]]
    model_view = client.get(f"/v1/models/{m['name']}").json()
    assert model_view["current_version"] == 2 and model_view["pending_jobs"] == []
    ds = client.get(f"/v1/datasets/{m['dataset']['id']}").json()
    assert ds["version"] == 2 and v2["dataset_version"] == 2
    assert ds["sha256"] != m["dataset"]["sha256"]
    req = client.get(f"/v1/requests/{sub['id']}").json()
    assert req["status"] == "succeeded" and req["job_id"] == job["id"]
    assert req["model"] == m["name"] and req["result"]["model_version"] == 2
    return ds


# ----------------------------------------------------------------------------- idempotency


def test_same_key_same_body_is_one_request(admin, model):
    key = uid("idem-same")
    body = {"model": model["name"], "kind": "delete_records", "record_ids": model["ids"][:3]}
    first = submit(admin, body, key)
    second = submit(admin, body, key)
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["job_id"] == second.json()["job_id"]
    assert second.headers["location"] == first.headers["location"]
    job = wait_job(admin, first.json()["job_id"])
    assert job["status"] == "succeeded", job
    # a retry after completion still answers with the same request, now succeeded
    third = submit(admin, {**body}, key)
    assert third.status_code == 202, third.text
    assert third.json() == {**first.json(), "status": "succeeded"}
    versions = admin.get(f"/v1/models/{model['name']}/versions").json()["items"]
    assert [v["version"] for v in versions] == [1, 2]
    assert admin.get(f"/v1/datasets/{model['dataset']['id']}").json()["n_records"] == 452
    events = admin.get("/v1/audit", params={"request": first.json()["id"]}).json()["items"]
    assert [e["type"] for e in events] == ["request.received", "request.completed"]


def test_same_key_different_body_is_409(admin, model):
    key = uid("idem-diff")
    body = {"model": model["name"], "kind": "delete_records", "record_ids": model["ids"][:1]}
    first = submit(admin, body, key)
    assert first.status_code == 202, first.text
    problem = assert_problem(
        submit(admin, {**body, "record_ids": model["ids"][1:2]}, key), 409, "Idempotency-Key"
    )
    assert problem["request_id"] == first.json()["id"]
    assert wait_job(admin, first.json()["job_id"])["status"] == "succeeded"
    versions = admin.get(f"/v1/models/{model['name']}/versions").json()["items"]
    assert len(versions) == 2


# ------------------------------------------------------------------------ correction kinds


def test_correct_labels_end_to_end(admin, model):
    rows = [3, 17, 42]
    new_labels = [1 - int(model["y"][r]) for r in rows]
    body = {
        "model": model["name"],
        "kind": "correct_labels",
        "corrections": [
            {"record_id": model["ids"][r], "label": lab}
            for r, lab in zip(rows, new_labels, strict=True)
        ],
        "legal_basis": "GDPR Art. 16",
    }
    before = proba(admin, model["name"], 1, model["X"][rows])
    sub, job = run_request(admin, body)
    ds = assert_new_version(admin, model, sub, job)
    assert ds["n_records"] == model["dataset"]["n_records"]  # corrected, not erased
    metrics = job["result"]["metrics"]
    assert metrics["n_affected"] == 3
    assert "affected_corrected" in metrics["fidelity_after"]
    # the model moved toward the corrected labels on the corrected records
    after = proba(admin, model["name"], 2, model["X"][rows])
    for i, lab in enumerate(new_labels):
        assert after[i, lab] > before[i, lab]
    req = admin.get(f"/v1/requests/{sub['id']}").json()
    assert req["kind"] == "correct_labels" and req["legal_basis"] == "GDPR Art. 16"


def test_correct_features_end_to_end(admin, model):
    row, feature = 8, model["features"][5]
    body = {
        "model": model["name"],
        "kind": "correct_features",
        "corrections": [{"record_id": model["ids"][row], "features": {feature: 2.5}}],
    }
    sub, job = run_request(admin, body)
    ds = assert_new_version(admin, model, sub, job)
    assert ds["n_records"] == model["dataset"]["n_records"]
    assert job["result"]["metrics"]["n_affected"] == 1
    w1, w2 = weights(admin, model["name"], 1), weights(admin, model["name"], 2)
    assert not np.array_equal(w1["weight"], w2["weight"])


def test_remove_features_end_to_end(admin, model):
    gone = [model["features"][0], model["features"][7]]
    body = {"model": model["name"], "kind": "remove_features", "features": gone}
    sub, job = run_request(admin, body)
    ds = assert_new_version(admin, model, sub, job)
    assert ds["n_records"] == model["dataset"]["n_records"]
    # Every record had a non-zero value in those columns; zeroed, the Hessian is block-diagonal
    # in them, so the Newton step sets their weights to exactly 0.
    assert job["result"]["metrics"]["n_affected"] == len(model["ids"])
    w1, w2 = weights(admin, model["name"], 1)["weight"], weights(admin, model["name"], 2)["weight"]
    assert np.abs(w1[:, [0, 7]]).min() > 1e-3
    np.testing.assert_allclose(w2[:, [0, 7]], 0.0, atol=1e-8)
    # the removed features no longer influence predictions
    x = model["X"][:2].copy()
    x_changed = x.copy()
    x_changed[:, [0, 7]] += 5.0
    np.testing.assert_allclose(
        proba(admin, model["name"], 2, x), proba(admin, model["name"], 2, x_changed), atol=1e-9
    )


def test_requests_chain_versions_in_a_line(admin, model):
    """Two requests in a row: v2 (parent 1), then v3 (parent 2) on the updated dataset."""
    first = {"model": model["name"], "kind": "delete_records", "record_ids": model["ids"][:2]}
    sub1, _ = run_request(admin, first)
    second = {
        "model": model["name"],
        "kind": "correct_labels",
        "corrections": [{"record_id": model["ids"][5], "label": 1 - int(model["y"][5])}],
    }
    sub2, job2 = run_request(admin, second)
    assert job2["result"]["model_version"] == 3
    v3 = admin.get(f"/v1/models/{model['name']}/versions/3").json()
    assert v3["parent"] == 2 and v3["request_ids"] == [sub2["id"]]
    ds = admin.get(f"/v1/datasets/{model['dataset']['id']}").json()
    assert ds["version"] == 3 and ds["n_records"] == len(model["ids"]) - 2
    # the erased records are unknown now, the corrected one is still there
    r = submit(admin, {**first, "reference": "again"})
    problem = assert_problem(r, 422, model["ids"][0])
    assert set(problem["unknown"]) == set(model["ids"][:2])
    assert sub1["id"] != sub2["id"]


# ------------------------------------------------------------------------ jobs and scoring


def test_cancel_of_an_ended_job_is_409(admin, model):
    sub, job = run_request(
        admin, {"model": model["name"], "kind": "delete_records", "record_ids": model["ids"][:1]}
    )
    assert_problem(admin.post(f"/v1/jobs/{job['id']}/cancel"), 409, "succeeded")
    assert admin.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert admin.get(f"/v1/requests/{sub['id']}").json()["status"] == "succeeded"
    train_job = admin.get(f"/v1/models/{model['name']}/versions/1").json()["job_id"]
    assert_problem(admin.post(f"/v1/jobs/{train_job}/cancel"), 409, "nothing to cancel")


def test_job_view_has_the_contract_fields(admin, model):
    job_id = admin.get(f"/v1/models/{model['name']}/versions/1").json()["job_id"]
    job = admin.get(f"/v1/jobs/{job_id}").json()
    for field in (
        "id",
        "kind",
        "status",
        "progress",
        "stage",
        "result",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    ):
        assert field in job
    assert job["kind"] == "train" and job["status"] == "succeeded" and job["error"] is None


def test_score_returns_probabilities(admin, model):
    X = model["X"][:5]
    r = admin.post(f"/v1/models/{model['name']}/versions/1/score", json={"X": X.tolist()})
    assert r.status_code == 200, r.text
    out = r.json()
    P = np.asarray(out["probabilities"])
    assert P.shape == (5, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9)
    assert (P >= 0).all()
    assert out["predictions"] == P.argmax(axis=1).tolist()
    assert out["version"] == 1 and out["model"] == model["name"]
    # the model fits its training data well
    assert (P.argmax(axis=1) == model["y"][:5]).mean() >= 0.8


@pytest.mark.parametrize(
    ("X", "fragments"),
    [
        ([[0.0] * 29], ["30 features", "29"]),
        ([[0.0] * 30, [0.0] * 31], ["30 features", "31"]),
        ([], ["X"]),
        ([["a"] * 30], ["X"]),
    ],
)
def test_score_with_bad_rows_is_422(admin, model, X, fragments):
    r = admin.post(f"/v1/models/{model['name']}/versions/1/score", json={"X": X})
    assert_problem(r, 422, *fragments)


def test_score_with_non_finite_values_is_422(admin, model):
    row = ", ".join(["0.0"] * 29 + ["Infinity"])
    r = admin.post(
        f"/v1/models/{model['name']}/versions/1/score",
        content=f'{{"X": [[{row}]]}}'.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(r, 422, "finite")
