"""``auto`` falls back to retraining when the evidence of an update is bad."""

from __future__ import annotations

import numpy as np
import pytest
from svc import breast_cancer_split, record_ids, train_model, upload, wait_job

pytestmark = pytest.mark.service


def test_auto_retrains_when_the_second_order_step_overshoots(admin):
    # Flipping the labels of 5% of confidently classified points is far outside the
    # quadratic model around θ*: the Newton step overshoots and the residual on D' rises.
    X, y, _, _ = breast_cancer_split(seed=3)
    ids = record_ids(len(y), "flip")
    card = upload(admin, "bc-flip", X=X, y=y, record_ids=ids)
    train_model(admin, "bc-flip", card["id"], l2=1.0)
    rows = np.arange(0, len(y), 20)
    corrections = [{"record_id": ids[i], "label": int(1 - y[i])} for i in rows]
    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "flip-auto"},
        json={"model": "bc-flip", "kind": "correct_labels", "corrections": corrections},
    )
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["method"] == "retrain"
    reason = result["metrics"]["method_reason"]
    assert "second_order rejected" in reason and "gradient residual" in reason
    assert [a["method"] for a in result["metrics"]["attempts"]] == ["second_order", "retrain"]
    assert result["metrics"]["gradient_residual"] < 1e-4

    # an explicit second_order request keeps the step and says the evidence is bad
    corrections = [{"record_id": ids[i], "label": int(y[i])} for i in rows]
    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "flip-explicit"},
        json={
            "model": "bc-flip",
            "kind": "correct_labels",
            "corrections": corrections,
            "method": "second_order",
        },
    )
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["result"]["method"] == "second_order"
