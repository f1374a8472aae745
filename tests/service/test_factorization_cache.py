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


def test_multiclass_model_beyond_the_dense_size_caches_its_cg_preconditioner(admin):
    """Beyond ``exact_max_params`` (5,000) a multiclass linear model is solved by CG; every
    version caches its block preconditioner, and the next request uses it."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=600,
        n_features=520,
        n_informative=30,
        n_classes=10,
        n_clusters_per_class=1,
        random_state=0,
    )
    ids = record_ids(len(y), "blk")
    card = upload(admin, "mc-blocks", X=X, y=y, record_ids=ids)
    train_model(admin, "mc-blocks", card["id"], l2=10.0)
    for i, chunk in enumerate((ids[:3], ids[3:6])):
        r = admin.post(
            "/v1/requests",
            headers={"Idempotency-Key": f"blk-{i}"},
            json={"model": "mc-blocks", "kind": "delete_records", "record_ids": chunk.tolist()},
        )
        job = wait_job(admin, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        m = job["result"]["metrics"]
        assert job["result"]["method"] == "second_order"
        assert m["n_updated_params"] == 10 * 521 and m["solver"] == "cg", m
        assert m["preconditioner"] == "block" and m["preconditioner_source"] == "cached", m
        # one Newton step on 600 points in 520 dimensions: the gradient falls > 10×
        assert m["converged"] and m["gradient_residual"] < 0.1 * m["gradient_residual_before"]
