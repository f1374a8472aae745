"""The Hessian factorisation of a convex version is cached and reused by the next request."""

from __future__ import annotations

import pytest
from svc import breast_cancer_split, record_ids, train_model, upload, wait_job

pytestmark = pytest.mark.service


def two_second_order_deletions(admin, name: str, X, y, key: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """Upload (X, y) as ``name``, train it, delete records 0–2 and then 3–5 in two requests;
    the metrics of both second-order updates."""
    ids = record_ids(len(y), key)
    card = upload(admin, name, X=X, y=y, record_ids=ids)
    train_model(admin, name, card["id"], l2=10.0)
    out = []
    for i, chunk in enumerate((ids[:3], ids[3:6])):
        r = admin.post(
            "/v1/requests",
            headers={"Idempotency-Key": f"{key}-{i}"},
            json={"model": name, "kind": "delete_records", "record_ids": chunk.tolist()},
        )
        job = wait_job(admin, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        assert job["result"]["method"] == "second_order"
        out.append(job["result"]["metrics"])
    return out


def test_second_request_reuses_the_cached_factorisation(admin):
    X, y, _, _ = breast_cancer_split(seed=11)
    for m in two_second_order_deletions(admin, "bc-fact", X, y, "fact"):
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
    for m in two_second_order_deletions(admin, "mc-blocks", X, y, "blk"):
        assert m["n_updated_params"] == 10 * 521 and m["solver"] == "cg", m
        assert m["preconditioner"] == "block" and m["preconditioner_source"] == "cached", m
        # one Newton step on 600 points in 520 dimensions: the gradient falls > 10×
        assert m["converged"] and m["gradient_residual"] < 0.1 * m["gradient_residual_before"]
