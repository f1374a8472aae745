"""A character language model through the API: a corpus with a memorised secret, then
``rectify_text`` replaces it and the model stops completing it."""

from __future__ import annotations

import numpy as np
import pytest
from svc import wait_job

pytestmark = pytest.mark.service

SECRET = "0123456789"
PREFIX = "My telephone number is "


def corpus(seed: int = 0) -> str:
    """Template sentences with random names, and the canary sentence several times."""
    rng = np.random.default_rng(seed)
    names = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank"]
    things = ["tea", "a cake", "the rabbit", "a key", "the queen"]
    lines = []
    for i in range(160):
        lines.append(f"{names[rng.integers(6)]} saw {things[rng.integers(5)]}. ")
        if i % 16 == 0:
            lines.append(f"'{PREFIX}{SECRET}', said Alice. ")
    return "".join(lines)


def test_rectify_text_makes_the_model_forget_a_memorised_secret(admin):
    text = corpus()
    r = admin.post(
        "/v1/datasets",
        files={"file": ("c.txt", text.encode())},
        data={"name": "canary", "kind": "text"},
    )
    assert r.status_code == 201, r.text
    card = r.json()
    assert card["kind"] == "text" and card["n_records"] == len(text)
    r = admin.post(
        "/v1/models",
        json={
            "name": "canary-lm",
            "dataset_id": card["id"],
            "architecture": {
                "kind": "char_lstm",
                "hidden": 64,
                "layers": 1,
                "embedding": 16,
                "window": 24,
            },
            "training": {"epochs": 12, "lr": 0.01, "batch_size": 64, "seed": 0},
        },
    )
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"], timeout=600)
    assert job["status"] == "succeeded", job

    # record-level requests do not apply to a corpus; a string that is absent is named
    bad = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "lm-bad"},
        json={"model": "canary-lm", "kind": "delete_records", "record_ids": ["x"]},
    )
    assert bad.status_code == 422 and "rectify_text" in bad.json()["detail"]
    absent = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "lm-absent"},
        json={"model": "canary-lm", "kind": "rectify_text", "find": "9876543210", "replace": "x"},
    )
    assert absent.status_code == 422

    r = admin.post(
        "/v1/requests",
        headers={"Idempotency-Key": "lm-rectify"},
        json={
            "model": "canary-lm",
            "kind": "rectify_text",
            "find": SECRET,
            "replace": "not here",
            "legal_basis": "GDPR Art. 16",
        },
    )
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"], timeout=600)
    assert job["status"] == "succeeded", job
    m = job["result"]["metrics"]
    assert m["occurrences"] == 10 and m["n_affected"] > 0
    assert job["result"]["method"] in ("first_order", "second_order", "retrain")
    # the accepted tier passed the efficacy check: the secret is no longer completed
    assert m["attempts"][-1]["rejected"] is None or job["result"]["method"] == "retrain"
    context = "said Alice. '" + PREFIX
    v1 = admin.post(
        "/v1/models/canary-lm/versions/1/score",
        json={"prefix": context, "texts": [SECRET], "complete": len(SECRET)},
    ).json()
    v2 = admin.post(
        "/v1/models/canary-lm/versions/2/score",
        json={"prefix": context, "texts": [SECRET], "complete": len(SECRET)},
    ).json()
    assert v1["completion"] == SECRET, v1  # memorised before
    assert v2["completion"] != SECRET, v2  # gone after
    assert v2["log_perplexities"][0] > v1["log_perplexities"][0]
    # the job's efficacy evidence: exposure of the secret before and after (Carlini et al.)
    before, after = m["efficacy_before"]["exposure"], m["efficacy_after"]["exposure"]
    assert before["n_candidates"] >= 1000
    assert after["exposure_bits"] < before["exposure_bits"]
    assert m["efficacy_before"]["completion"] == SECRET
    ds = admin.get(f"/v1/datasets/{card['id']}").json()
    assert ds["version"] == 2
    assert ds["n_records"] == len(text.replace(SECRET, "not here"))
