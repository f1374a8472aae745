"""Error contract of the HTTP API (issue 2): every 4xx is ``application/problem+json`` with
``type``, ``title``, ``status`` and a ``detail`` that tells the caller what to fix, and nothing is
half-written when a request fails."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from svc import (
    Service,
    assert_problem,
    breast_cancer_split,
    npz_bytes,
    record_ids,
    train_model,
    uid,
    upload,
    wait_job,
)

pytestmark = pytest.mark.service


def dataset_ids(client: httpx.Client) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/datasets", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        ids |= {d["id"] for d in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            return ids


def audit_events(client: httpx.Client) -> int:
    r = client.get("/v1/audit/verify")
    assert r.status_code == 200, r.text
    verdict = r.json()
    assert verdict["ok"] is True, verdict
    return verdict["events"]


def small_table(n: int = 12, d: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "X": rng.normal(size=(n, d)),
        "y": np.arange(n) % 2,
        "record_ids": record_ids(n, uid("r")),
    }


def post_file(client: httpx.Client, content: bytes, name: str | None = None, **data: str):
    return client.post(
        "/v1/datasets",
        files={"file": ("upload.npz", content)},
        data={"name": name or uid("bad-upload"), **data},
    )


# --------------------------------------------------------------------------------- uploads


class _Tripwire:
    """Unpickling this object creates a directory: proof that the server ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (str(self.marker),))


def _npy_only() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((4, 2)))
    return buf.getvalue()


def _with(**changes: np.ndarray | None) -> Callable[[], bytes]:
    def make() -> bytes:
        arrays = small_table()
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        return npz_bytes(**arrays)

    return make


def _duplicate_ids() -> bytes:
    arrays = small_table()
    ids = arrays["record_ids"].copy()
    ids[5] = "dup-record-7"
    ids[9] = "dup-record-7"
    return npz_bytes(**{**arrays, "record_ids": ids})


def _zip_of_non_arrays() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("X.npy", "y.npy", "record_ids.npy"):
            z.writestr(name, b"not an npy file")
    return buf.getvalue()


def _nan_X() -> bytes:
    arrays = small_table()
    arrays["X"][3, 1] = np.nan
    return npz_bytes(**arrays)


UPLOAD_CASES: dict[str, tuple[Callable[[], bytes], list[str]]] = {
    "random-bytes": (lambda: np.random.default_rng(7).bytes(4096), ["not a readable .npz"]),
    "empty-file": (lambda: b"", [".npz"]),
    "npy-not-npz": (_npy_only, [".npz", "X", "record_ids"]),
    "missing-arrays": (_with(y=None, record_ids=None), ["'y'", "'record_ids'"]),
    "X-y-length-mismatch": (_with(y=np.arange(11) % 2), ["'y'", "(12)", "(11,)"]),
    "ids-length-mismatch": (_with(record_ids=record_ids(5)), ["'record_ids'", "length 12"]),
    "X-not-2d": (_with(X=np.zeros(12)), ["'X'", "2-D"]),
    "X-not-numeric": (_with(X=np.full((12, 3), "a")), ["'X'", "numeric"]),
    "nan-in-X": (_nan_X, ["NaN", "impute"]),
    "non-integer-labels": (_with(y=np.linspace(0, 1, 12)), ["integer class labels"]),
    "string-labels": (_with(y=np.array(["a", "b"] * 6)), ["integer class labels"]),
    "negative-labels": (_with(y=np.array([-1, 0] * 6)), ["negative"]),
    "one-class": (_with(y=np.zeros(12, dtype=int)), ["two classes"]),
    "label-beyond-records": (_with(y=np.array([0, 1] * 5 + [0, 10**9])), ["1000000000", "(12)"]),
    "non-npy-members": (_zip_of_non_arrays, ["not a NumPy array"]),
    "duplicate-record-ids": (_duplicate_ids, ["unique", "dup-record-7"]),
    "empty-record-id": (_with(record_ids=np.array([""] + [f"x{i}" for i in range(11)])), ["empty"]),
    "feature-names-wrong-length": (_with(feature_names=np.array(["a", "b"])), ["feature_names"]),
    "feature-names-not-unique": (_with(feature_names=np.array(["a", "a", "b"])), ["unique"]),
    "object-record-ids": (
        _with(record_ids=np.array([f"id{i}" for i in range(12)], dtype=object)),
        ["pickle", "dtype=str"],
    ),
}


@pytest.mark.parametrize("case", sorted(UPLOAD_CASES))
def test_bad_upload_is_a_problem_and_stores_nothing(admin, case):
    make, fragments = UPLOAD_CASES[case]
    before = dataset_ids(admin)
    r = post_file(admin, make())
    assert_problem(r, 422, *fragments)
    assert dataset_ids(admin) == before


def test_pickled_npz_is_refused_without_unpickling(admin, tmp_path):
    marker = tmp_path / f"unpickled-{uuid.uuid4().hex}"
    arrays = small_table()
    X = np.empty((12, 3), dtype=object)
    X[:] = 0.0
    X[0, 0] = _Tripwire(marker)
    before = dataset_ids(admin)
    r = post_file(admin, npz_bytes(X=X, y=arrays["y"], record_ids=arrays["record_ids"]))
    assert_problem(r, 422, "'X'", "pickle")
    assert not marker.exists(), "the server unpickled an uploaded array"
    assert dataset_ids(admin) == before


def test_bad_text_upload_is_refused_clearly(admin):
    """kind=text with bytes that are no UTF-8 corpus (here: an .npz) is a 422 that says why."""
    before = dataset_ids(admin)
    r = post_file(admin, b"\xff\xfe\x00\x93" + npz_bytes(**small_table()), kind="text")
    problem = assert_problem(r, 422)
    assert "utf-8" in problem["detail"].lower() or "kind=text" in problem["detail"], problem
    assert dataset_ids(admin) == before


@pytest.mark.parametrize(
    ("data", "fragment"),
    [({"name": "no spaces allowed"}, "name"), ({"name": "x", "kind": "image"}, "kind")],
)
def test_bad_upload_form_fields_are_problems(admin, data, fragment):
    before = dataset_ids(admin)
    r = admin.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(**small_table()))}, data=data)
    assert_problem(r, 422, fragment)
    assert dataset_ids(admin) == before


def test_upload_without_a_file_is_a_problem(admin):
    r = admin.post("/v1/datasets", data={"name": uid("nofile")})
    assert_problem(r, 422, "file")


def test_good_upload_returns_the_card(admin):
    name = uid("good")
    r = admin.post(
        "/v1/datasets", files={"file": ("d.npz", npz_bytes(**small_table()))}, data={"name": name}
    )
    assert r.status_code == 201, r.text
    card = r.json()
    assert r.headers["location"] == f"/v1/datasets/{card['id']}"
    for field in ("id", "name", "kind", "version", "n_records", "n_features", "sha256"):
        assert field in card
    assert (card["name"], card["kind"], card["version"]) == (name, "tabular", 1)
    assert (card["n_records"], card["n_features"]) == (12, 3)
    assert "created_at" in card


# ------------------------------------------------------------------------------------ auth


@pytest.fixture(scope="module")
def scoped_keys(service: Service) -> dict[str, str]:
    keys = {}
    with service.client() as admin:
        for scope in ("read", "submit", "audit"):
            r = admin.post("/v1/keys", json={"name": uid(f"errors-{scope}"), "scopes": [scope]})
            assert r.status_code == 201, r.text
            keys[scope] = r.json()["key"]
    return keys


@pytest.mark.parametrize("path", ["/v1/datasets", "/v1/models", "/v1/audit", "/v1/keys"])
def test_missing_key_is_401_with_www_authenticate(service, path):
    with service.client(key=None) as anon:
        r = anon.get(path)
    assert_problem(r, 401, "Authorization: Bearer")
    assert r.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(
    "header", ["Bearer unl_not_a_real_key", "Basic dXNlcjpwYXNz", "Bearer", "unl_no_scheme"]
)
def test_wrong_key_is_401(service, header):
    with httpx.Client(base_url=service.base_url, headers={"Authorization": header}) as c:
        r = c.get("/v1/datasets")
    assert_problem(r, 401)
    assert r.headers["www-authenticate"].lower().startswith("bearer")


def test_wrong_key_cannot_submit(service):
    with service.client("unl_wrong") as c:
        r = c.post(
            "/v1/requests",
            json={"model": "x", "kind": "delete_records", "record_ids": ["a"]},
            headers={"Idempotency-Key": uid("k")},
        )
    assert_problem(r, 401)


def test_read_scope_reads_but_cannot_write(service, admin, scoped_keys):
    ds = upload(admin, uid("scoped"), **small_table())
    with service.client(scoped_keys["read"]) as reader:
        assert reader.get("/v1/datasets").status_code == 200
        assert reader.get(f"/v1/datasets/{ds['id']}").status_code == 200
        assert reader.get("/v1/models").status_code == 200
        r = reader.post(
            "/v1/requests",
            json={"model": "whatever", "kind": "delete_records", "record_ids": ["a"]},
            headers={"Idempotency-Key": uid("read-scope")},
        )
        assert_problem(r, 403, "submit")
        r = reader.post(
            "/v1/datasets",
            files={"file": ("d.npz", npz_bytes(**small_table()))},
            data={"name": uid("read-upload")},
        )
        assert_problem(r, 403, "submit")
        r = reader.post(
            "/v1/models",
            json={
                "name": uid("m"),
                "dataset_id": ds["id"],
                "architecture": {"kind": "logistic_regression"},
            },
        )
        assert_problem(r, 403, "submit")
        assert_problem(reader.post("/v1/jobs/some-job/cancel"), 403, "submit")
        assert_problem(reader.get("/v1/audit"), 403, "audit")
        assert_problem(reader.get("/v1/keys"), 403, "admin")
        assert_problem(reader.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}), 403)


def test_audit_scope_reads_the_audit_trail(service, scoped_keys):
    with service.client(scoped_keys["audit"]) as auditor:
        r = auditor.get("/v1/audit")
        assert r.status_code == 200, r.text
        assert "items" in r.json()
        assert auditor.get("/v1/audit/verify").json()["ok"] is True
        assert auditor.get("/v1/audit/export").status_code == 200
        assert auditor.get("/v1/datasets").status_code == 200  # audit implies read
        r = auditor.post(
            "/v1/datasets",
            files={"file": ("d.npz", npz_bytes(**small_table()))},
            data={"name": uid("audit-upload")},
        )
        assert_problem(r, 403, "submit")


def test_submit_scope_cannot_read_the_audit_trail(service, scoped_keys):
    with service.client(scoped_keys["submit"]) as submitter:
        assert_problem(submitter.get("/v1/audit"), 403, "audit")
        assert_problem(submitter.get("/v1/audit/verify"), 403, "audit")


# ------------------------------------------------------------------------------- not found


@pytest.fixture(scope="module")
def trained(service: Service) -> Iterator[dict]:
    """A small logistic model (breast cancer, λ = 10) for request-validation tests."""
    X, y, _, _ = breast_cancer_split(seed=3)
    ids = record_ids(len(y), uid("errs"))
    subjects = np.array([f"subj-{i // 5}" for i in range(len(y))])
    names = np.array([f"feat_{j}" for j in range(X.shape[1])])
    with service.client() as admin:
        card = upload(
            admin,
            uid("errors-bc"),
            X=X,
            y=y,
            record_ids=ids,
            subject_ids=subjects,
            feature_names=names,
        )
        name = uid("errors-model")
        train_model(admin, name, card["id"], l2=10.0)
        yield {"name": name, "dataset": card, "ids": ids.tolist(), "features": names.tolist()}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models/{m}"),
        ("GET", "/v1/models/{m}/versions"),
        ("GET", "/v1/models/{m}/versions/1"),
        ("GET", "/v1/models/{m}/versions/1/weights"),
        ("POST", "/v1/models/{m}/versions/1/score"),
    ],
)
def test_unknown_model_is_404(admin, method, path):
    name = uid("no-such-model")
    kwargs = {"json": {"X": [[0.0]]}} if method == "POST" else {}
    r = admin.request(method, path.format(m=name), **kwargs)
    assert_problem(r, 404, name)


def test_request_for_unknown_model_is_404(admin):
    name = uid("ghost-model")
    before = audit_events(admin)
    r = admin.post(
        "/v1/requests",
        json={"model": name, "kind": "delete_records", "record_ids": ["a"]},
        headers={"Idempotency-Key": uid("ghost")},
    )
    assert_problem(r, 404, name)
    assert audit_events(admin) == before


@pytest.mark.parametrize(
    ("method", "path", "fragment"),
    [
        ("GET", "/v1/jobs/{x}", "job"),
        ("POST", "/v1/jobs/{x}/cancel", "job"),
        ("GET", "/v1/requests/{x}", "request"),
        ("GET", "/v1/datasets/{x}", "dataset"),
        ("DELETE", "/v1/keys/{x}", "key"),
    ],
)
def test_unknown_resource_is_404(admin, method, path, fragment):
    x = uid("missing")
    assert_problem(admin.request(method, path.format(x=x)), 404, fragment, x)


def test_unknown_version_is_404(admin, trained):
    name = trained["name"]
    for path in (f"/v1/models/{name}/versions/99", f"/v1/models/{name}/versions/99/weights"):
        assert_problem(admin.get(path), 404, "no version 99", "latest is")
    r = admin.post(f"/v1/models/{name}/versions/99/score", json={"X": [[0.0] * 30]})
    assert_problem(r, 404, "no version 99")
    assert_problem(admin.get(f"/v1/models/{name}/versions/one"), 422, "version")


@pytest.mark.parametrize("with_key", [True, False])
def test_unknown_route_is_404_problem(service, with_key):
    with service.client() if with_key else service.client(key=None) as c:
        r = c.get("/v1/nothing-here")
    assert_problem(r, 404, "/v1/nothing-here")


def test_wrong_method_is_405_problem(admin):
    r = admin.delete("/v1/datasets")
    assert_problem(r, 405, "DELETE", "GET", "POST")
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}


def test_bad_cursor_is_400_problem(admin):
    assert_problem(admin.get("/v1/datasets", params={"cursor": "%%%not-base64"}), 400, "cursor")


# -------------------------------------------------------------------------------- requests


def _submit(client: httpx.Client, body: dict | bytes, key: str | None = "fresh"):
    headers = {}
    if key == "fresh":
        headers["Idempotency-Key"] = uid("req-err")
    elif key is not None:
        headers["Idempotency-Key"] = key
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        return client.post("/v1/requests", content=body, headers=headers)
    return client.post("/v1/requests", json=body, headers=headers)


def _state(client: httpx.Client, model: str) -> tuple:
    m = client.get(f"/v1/models/{model}").json()
    versions = client.get(f"/v1/models/{model}/versions").json()["items"]
    return audit_events(client), tuple(m["pending_jobs"]), m["current_version"], len(versions)


def _assert_nothing_written(client: httpx.Client, model: str, before: tuple) -> None:
    after = _state(client, model)
    assert after == before, (before, after)
    assert after[1] == (), "a failed submission created a job"


def test_missing_idempotency_key_is_400(admin, trained):
    before = _state(admin, trained["name"])
    body = {"model": trained["name"], "kind": "delete_records", "record_ids": trained["ids"][:1]}
    assert_problem(_submit(admin, body, key=None), 400, "Idempotency-Key")
    assert_problem(_submit(admin, body, key="k" * 201), 400, "Idempotency-Key")
    _assert_nothing_written(admin, trained["name"], before)


def test_unknown_record_ids_are_named(admin, trained):
    before = _state(admin, trained["name"])
    unknown = [uid("nobody"), uid("nobody")]
    body = {
        "model": trained["name"],
        "kind": "delete_records",
        "record_ids": [trained["ids"][0], unknown[0], trained["ids"][1], unknown[1]],
    }
    problem = assert_problem(_submit(admin, body), 422, *unknown)
    assert problem["unknown"] == unknown
    assert trained["ids"][0] not in problem["detail"]
    _assert_nothing_written(admin, trained["name"], before)


def test_many_unknown_ids_are_summarised(admin, trained):
    before = _state(admin, trained["name"])
    unknown = [f"ghost-{i}" for i in range(50)]
    body = {"model": trained["name"], "kind": "delete_records", "record_ids": unknown}
    problem = assert_problem(_submit(admin, body), 422, "ghost-0", "30 more")
    assert problem["n_unknown"] == 50 and len(problem["unknown"]) == 20
    _assert_nothing_written(admin, trained["name"], before)


def _bodies(t: dict) -> dict[str, tuple[dict | bytes, list[str]]]:
    m, ids, feats = t["name"], t["ids"], t["features"]
    return {
        "both-selectors": (
            {"model": m, "kind": "delete_records", "record_ids": ids[:1], "subject_id": "subj-0"},
            ["record_ids", "subject_id"],
        ),
        "no-selector": ({"model": m, "kind": "delete_records"}, ["record_ids", "subject_id"]),
        "empty-record-ids": (
            {"model": m, "kind": "delete_records", "record_ids": []},
            ["must not be empty"],
        ),
        "unknown-subject": (
            {"model": m, "kind": "delete_records", "subject_id": "subj-nobody"},
            ["subject"],
        ),
        "bad-kind": ({"model": m, "kind": "forget_everything"}, ["kind", "delete_records"]),
        "no-kind": ({"model": m, "record_ids": ids[:1]}, ["kind"]),
        "bad-method": (
            {"model": m, "kind": "delete_records", "record_ids": ids[:1], "method": "magic"},
            ["method", "second_order"],
        ),
        "extra-field": (
            {"model": m, "kind": "delete_records", "record_ids": ids[:1], "colour": "red"},
            ["colour"],
        ),
        "label-out-of-range": (
            {
                "model": m,
                "kind": "correct_labels",
                "corrections": [{"record_id": ids[0], "label": 2}],
            },
            ["0..1", "2"],
        ),
        "negative-label": (
            {
                "model": m,
                "kind": "correct_labels",
                "corrections": [{"record_id": ids[0], "label": -1}],
            },
            ["label"],
        ),
        "label-for-unknown-record": (
            {
                "model": m,
                "kind": "correct_labels",
                "corrections": [{"record_id": "who-is-this", "label": 1}],
            },
            ["who-is-this"],
        ),
        "repeated-label-correction": (
            {
                "model": m,
                "kind": "correct_labels",
                "corrections": [
                    {"record_id": ids[0], "label": 1},
                    {"record_id": ids[0], "label": 0},
                ],
            },
            ["once"],
        ),
        "unknown-feature-correction": (
            {
                "model": m,
                "kind": "correct_features",
                "corrections": [{"record_id": ids[0], "features": {"height_cm": 1.0}}],
            },
            ["height_cm"],
        ),
        "non-finite-feature-value": (
            json.dumps(
                {
                    "model": m,
                    "kind": "correct_features",
                    "corrections": [{"record_id": ids[0], "features": {feats[0]: float("nan")}}],
                }
            ).encode(),
            ["finite"],
        ),
        "remove-unknown-features": (
            {"model": m, "kind": "remove_features", "features": [feats[0], "zodiac_sign"]},
            ["zodiac_sign"],
        ),
        "remove-no-features": (
            {"model": m, "kind": "remove_features", "features": []},
            ["features"],
        ),
        "rectify-text-on-tabular": (
            {"model": m, "kind": "rectify_text", "find": "a", "replace": "b"},
            ["text"],
        ),
        "malformed-json": (b'{"model": "x", "kind": ', ["json"]),
        "json-not-an-object": (b"[1, 2, 3]", ["schema"]),
        "empty-body": (b"", ["body"]),
    }


@pytest.mark.parametrize("case", sorted(_bodies({"name": "", "ids": [""], "features": [""]})))
def test_bad_request_body_is_422_and_writes_nothing(admin, trained, case):
    body, fragments = _bodies(trained)[case]
    before = _state(admin, trained["name"])
    problem = assert_problem(_submit(admin, body), 422, *fragments)
    assert problem["type"].startswith("/problems/")
    _assert_nothing_written(admin, trained["name"], before)


def test_unknown_feature_names_are_listed_in_a_member(admin, trained):
    body = {"model": trained["name"], "kind": "remove_features", "features": ["zodiac_sign"]}
    problem = assert_problem(_submit(admin, body), 422, "zodiac_sign")
    assert problem["unknown_features"] == ["zodiac_sign"]


def test_failed_submission_does_not_burn_the_idempotency_key(admin, trained):
    """A refused request leaves no trace: the same key can then carry a corrected request."""
    key = uid("retry-after-422")
    bad = {"model": trained["name"], "kind": "correct_labels", "corrections": []}
    assert_problem(_submit(admin, bad, key=key), 422)
    good = {
        "model": trained["name"],
        "kind": "correct_labels",
        "corrections": [{"record_id": trained["ids"][10], "label": 1}],
    }
    r = _submit(admin, good, key=key)
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json()["job_id"])
    assert job["status"] == "succeeded", job


# ---------------------------------------------------------------------------------- models


def _model_body(dataset_id: str, **over) -> dict:
    return {
        "name": uid("m"),
        "dataset_id": dataset_id,
        "architecture": {"kind": "logistic_regression"},
        "training": {"l2": 1.0},
        **over,
    }


@pytest.fixture
def fresh_dataset(admin) -> dict:
    return upload(admin, uid("model-errs"), **small_table(n=40, d=4))


def _assert_no_model(client: httpx.Client, name: str, events_before: int) -> None:
    assert_problem(client.get(f"/v1/models/{name}"), 404, name)
    assert audit_events(client) == events_before


@pytest.mark.parametrize(
    ("over", "fragments"),
    [
        ({"architecture": {"kind": "random_forest"}}, ["random_forest", "logistic_regression"]),
        ({"architecture": {}}, ["kind", "logistic_regression"]),
        ({"architecture": {"kind": "logistic_regression", "depth": 3}}, ["depth"]),
        ({"training": {"learning_rate": 0.1}}, ["learning_rate", "l2"]),
        ({"training": {"l2": -1}}, ["l2", "> 0"]),
        ({"training": {"l2": "lots"}}, ["l2"]),
        ({"training": {"solver": "adam"}}, ["solver", "newton"]),
        (
            {"architecture": {"kind": "mlp"}, "certification": {"epsilon": 1.0, "delta": 1e-5}},
            ["convex", "null"],
        ),
        ({"certification": {"epsilon": 1.0, "delta": 2.0}}, ["delta"]),
        ({"certification": {"epsilon": -1.0, "delta": 1e-5}}, ["epsilon"]),
        ({"name": "has spaces"}, ["name"]),
        ({"optimizer": "sgd"}, ["optimizer"]),
    ],
)
def test_bad_model_is_422_and_writes_nothing(admin, fresh_dataset, over, fragments):
    body = _model_body(fresh_dataset["id"], **over)
    events = audit_events(admin)
    assert_problem(admin.post("/v1/models", json=body), 422, *fragments)
    if body["name"] != "has spaces":
        _assert_no_model(admin, body["name"], events)
    # the dataset stays free for a model
    r = admin.post("/v1/models", json=_model_body(fresh_dataset["id"]))
    assert r.status_code == 202, r.text
    assert wait_job(admin, r.json()["job_id"])["status"] == "succeeded"


def test_model_on_unknown_dataset_is_404(admin):
    body = _model_body(uid("no-dataset"))
    events = audit_events(admin)
    assert_problem(admin.post("/v1/models", json=body), 404, body["dataset_id"])
    _assert_no_model(admin, body["name"], events)


def test_duplicate_model_name_is_409(admin, fresh_dataset):
    first = _model_body(fresh_dataset["id"])
    r = admin.post("/v1/models", json=first)
    assert r.status_code == 202, r.text
    assert wait_job(admin, r.json()["job_id"])["status"] == "succeeded"
    other = upload(admin, uid("model-errs-2"), **small_table(n=40, d=4, seed=1))
    events = audit_events(admin)
    r = admin.post("/v1/models", json=_model_body(other["id"], name=first["name"]))
    assert_problem(r, 409, first["name"], "another name")
    assert audit_events(admin) == events
    # the same dataset cannot back a second model
    second = _model_body(fresh_dataset["id"])
    assert_problem(admin.post("/v1/models", json=second), 409, first["name"], "upload it again")
    _assert_no_model(admin, second["name"], events)
    assert admin.get(f"/v1/models/{first['name']}").json()["dataset_id"] == fresh_dataset["id"]
