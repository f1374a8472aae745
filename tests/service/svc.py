"""Helpers to run a real unlearnd (``unlearnd run``: migrations, bootstrap key, API + Celery
worker) in a subprocess on a free port and to drive it over HTTP."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ADMIN_KEY = "unl_test_admin_key_0123456789"
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    base_url: str
    data_dir: Path
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen

    def client(self, key: str | None = ADMIN_KEY) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def start_service(backend, data_dir: Path, extra_env: dict[str, str] | None = None) -> Service:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "UNLEARND_DATA_DIR": str(data_dir),
        "UNLEARND_DATABASE_URL": backend.database_url,
        "UNLEARND_BROKER_URL": backend.broker_url,
        "UNLEARND_QUEUE": backend.queue,
        "UNLEARND_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "UNLEARND_RECONCILE_INTERVAL_S": "1",
        "UNLEARND_REDISPATCH_AFTER_S": "10",
        **(extra_env or {}),
    }
    log_path = data_dir / "service.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    svc = Service(f"http://127.0.0.1:{port}", data_dir, log_path, env, proc)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"unlearnd run exited early:\n{svc.log_tail()}")
        try:
            if httpx.get(f"{svc.base_url}/healthz", timeout=2).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_service(svc)
    raise RuntimeError(f"unlearnd run did not become healthy:\n{svc.log_tail()}")


def stop_service(svc: Service) -> None:
    import signal

    if svc.process.poll() is None:
        os.killpg(svc.process.pid, signal.SIGTERM)
        try:
            svc.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(svc.process.pid, signal.SIGKILL)
            svc.process.wait()


def wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    """Poll ``GET /v1/jobs/{id}`` until the job ends; return its final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def breast_cancer_split(seed: int = 0):  # type: ignore[no-untyped-def]
    """Standardised breast-cancer data: (X_train, y_train, X_test, y_test), 455/114 rows."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    n_train = 455
    mu, sd = X[:n_train].mean(0), X[:n_train].std(0)
    X = (X - mu) / sd
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def record_ids(n: int, prefix: str = "rec") -> np.ndarray:
    return np.array([f"{prefix}-{i:05d}" for i in range(n)])


def subject_ids(n: int, per_subject: int = 3) -> np.ndarray:
    return np.array([f"subject-{i // per_subject:04d}" for i in range(n)])


def upload(client: httpx.Client, name: str, **arrays: np.ndarray) -> dict:
    r = client.post(
        "/v1/datasets", files={"file": (f"{name}.npz", npz_bytes(**arrays))}, data={"name": name}
    )
    assert r.status_code == 201, r.text
    return r.json()


def train_model(client: httpx.Client, name: str, dataset_id: str, l2: float = 1.0) -> dict:
    r = client.post(
        "/v1/models",
        json={
            "name": name,
            "dataset_id": dataset_id,
            "architecture": {"kind": "logistic_regression"},
            "training": {"l2": l2, "seed": 0},
        },
    )
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    return job


def uid(prefix: str) -> str:
    """A unique name, so that tests sharing the session's service never collide."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_problem(r: httpx.Response, status: int, *fragments: str) -> dict:
    """``r`` is an RFC 9457 problem with ``status`` whose detail contains every fragment."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    for member in ("type", "title", "status", "detail"):
        assert member in body, body
    assert body["status"] == status, body
    assert isinstance(body["detail"], str) and body["detail"], body
    for fragment in fragments:
        assert fragment.lower() in body["detail"].lower(), (fragment, body)
    return body
