"""An auditor's check: ``verify`` retrains a reference on the version's data and compares."""

from __future__ import annotations

import numpy as np
import pytest
from svc import breast_cancer_split, record_ids, train_model, upload, wait_job

pytestmark = pytest.mark.service


def test_verify_compares_a_version_with_a_retrained_reference(admin):
    X, y, X_test, y_test = breast_cancer_split(seed=7)
    ids = record_ids(len(y), "verify")
    # the dataset's own held-out split serves the fidelity evidence
    card = upload(admin, "bc-verify", X=X, y=y, record_ids=ids, X_test=X_test, y_test=y_test)
    train_model(admin, "bc-verify", card["id"], l2=10.0)
    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "verify-del"},
        json={"model": "bc-verify", "kind": "delete_records", "record_ids": ids[:4].tolist()},
    )
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded"
    fid = job["result"]["metrics"]
    assert fid["fidelity_before"]["held_out"]["accuracy"] > 0.9
    assert (
        abs(
            fid["fidelity_after"]["held_out"]["accuracy"]
            - fid["fidelity_before"]["held_out"]["accuracy"]
        )
        < 0.02
    )
    v1 = admin.get("/v1/models/bc-verify/versions/1").json()
    assert "held_out" in v1["metrics"]["training"]

    # the data of version 1 is erased: only the current version can be verified
    stale = admin.post("/v1/models/bc-verify/versions/1/verify")
    assert stale.status_code == 409 and "version 2" in stale.json()["detail"]

    r = admin.post("/v1/models/bc-verify/versions/2/verify")
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    m = job["result"]["metrics"]
    assert m["n_records"] == len(y) - 4
    assert m["relative_parameter_distance"] < 1e-2  # the update is close to retraining
    assert m["prediction_agreement"] >= 0.99
    assert abs(m["accuracy_difference"]) <= 0.01
    assert np.isfinite(m["retrain_wall_time_s"])
    assert abs(m["held_out_accuracy_version"] - m["held_out_accuracy_reference"]) <= 0.01
    events = admin.get("/v1/audit", params={"model": "bc-verify"}).json()["items"]
    assert events[-1]["type"] == "version.verified"


def test_a_malformed_held_out_split_is_refused(admin):
    from svc import npz_bytes

    X, y, X_test, y_test = breast_cancer_split(seed=8)
    ids = record_ids(len(y), "heldout")
    for extra, fragment in (
        ({"X_test": X_test}, "y_test"),
        ({"X_test": X_test[:, :5], "y_test": y_test}, "X_test"),
        ({"X_test": X_test, "y_test": y_test + 5}, "y_test"),
    ):
        r = admin.post(
            "/v1/datasets",
            data={"name": "heldout"},
            files={"file": ("d.npz", npz_bytes(X=X, y=y, record_ids=ids, **extra))},
        )
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert fragment in r.json()["detail"]
