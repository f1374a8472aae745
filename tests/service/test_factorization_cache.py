"""The Hessian factorisation of a convex version is cached and reused by the next request."""

from __future__ import annotations

import pytest
from svc import breast_cancer_split, record_ids, train_model, upload, wait_job

pytestmark = pytest.mark.service


def test_second_request_reuses_the_cached_factorisation(admin):
    X, y, _, _ = breast_cancer_split(seed=11)
    ids = record_ids(len(y), "fact")
    card = upload(admin, "bc-fact", X=X, y=y, record_ids=ids)
    train_model(admin, "bc-fact", card["id"], l2=10.0)
    for i, chunk in enumerate((ids[:3], ids[3:6])):
        r = admin.post(
            "/v1/requests",
            headers={"Idempotency-Key": f"fact-{i}"},
            json={"model": "bc-fact", "kind": "delete_records", "record_ids": chunk.tolist()},
        )
        job = wait_job(admin, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        m = job["result"]["metrics"]
        assert job["result"]["method"] == "second_order"
        assert m["factorization"] == "cached-woodbury", m
        assert m["gradient_residual"] < 1e-2 * m["gradient_residual_before"]
