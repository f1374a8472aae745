"""An auditor's check: ``verify`` retrains a reference on the version's data and compares."""

from __future__ import annotations

import numpy as np
import pytest
from svc import breast_cancer_split, record_ids, train_model, upload, wait_job

pytestmark = pytest.mark.service


def test_verify_compares_a_version_with_a_retrained_reference(admin):
    X, y, _, _ = breast_cancer_split(seed=7)
    ids = record_ids(len(y), "verify")
    card = upload(admin, "bc-verify", X=X, y=y, record_ids=ids)
    train_model(admin, "bc-verify", card["id"], l2=10.0)
    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "verify-del"},
        json={"model": "bc-verify", "kind": "delete_records", "record_ids": ids[:4].tolist()},
    )
    assert wait_job(admin, r.json()["job_id"])["status"] == "succeeded"

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
    events = admin.get("/v1/audit", params={"model": "bc-verify"}).json()["items"]
    assert events[-1]["type"] == "version.verified"
