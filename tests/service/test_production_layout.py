"""The production layout of docker-compose.yml, run without Docker: the very commands of its
prestart, api and worker services as separate processes against the tier's database and
broker (PostgreSQL + Redis in the postgres tier)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from svc import ADMIN_KEY, REPO, breast_cancer_split, free_port, record_ids, upload, wait_job

pytestmark = pytest.mark.service


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_share_one_image_and_the_worker_reserves_a_gpu():
    services = compose()["services"]
    assert {"postgres", "redis", "prestart", "api", "worker"} <= set(services)
    assert services["worker"]["command"] == ["unlearnd", "worker"]
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    env = services["api"]["environment"]
    assert env["UNLEARND_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["UNLEARND_BROKER_URL"].startswith("redis://")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") >= 2  # multi-stage
    assert '"unlearnd", "api"' in dockerfile


def test_compose_commands_run_the_service(backend_factory, tmp_path: Path):
    services = compose()["services"]
    backend = backend_factory("compose")
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "UNLEARND_DATABASE_URL": backend.database_url,
        "UNLEARND_BROKER_URL": backend.broker_url,
        "UNLEARND_QUEUE": backend.queue,
        "UNLEARND_DATA_DIR": str(tmp_path),
        "UNLEARND_SECRET_KEY": "compose-test-secret",
        "UNLEARND_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    }
    subprocess.run(services["prestart"]["command"], env=env, cwd=REPO, check=True, timeout=120)
    api_cmd = list(services["api"]["command"])
    api_cmd[api_cmd.index("--port") + 1] = str(port)
    api_cmd[api_cmd.index("--host") + 1] = "127.0.0.1"
    log = open(tmp_path / "procs.log", "wb")  # noqa: SIM115
    worker_env = {
        **env,
        **services["worker"]["environment"],
        **{
            k: env[k]
            for k in (
                "UNLEARND_DATABASE_URL",
                "UNLEARND_BROKER_URL",
                "UNLEARND_QUEUE",
                "UNLEARND_DATA_DIR",
                "UNLEARND_SECRET_KEY",
                "UNLEARND_BOOTSTRAP_ADMIN_KEY",
            )
        },
    }
    procs = [
        subprocess.Popen(
            api_cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        ),
        subprocess.Popen(
            services["worker"]["command"],
            env=worker_env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "procs.log").read_text()[-3000:]
            time.sleep(0.3)
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60
        ) as c:
            X, y, _, _ = breast_cancer_split(seed=5)
            ids = record_ids(len(y), "prod")
            card = upload(c, "prod", X=X, y=y, record_ids=ids)
            r = c.post(
                "/v1/models",
                json={
                    "name": "prod",
                    "dataset_id": card["id"],
                    "architecture": {"kind": "logistic_regression"},
                },
            )
            assert wait_job(c, r.json()["job_id"])["status"] == "succeeded"
            r = c.post(
                "/v1/requests",
                headers={"Idempotency-Key": "prod-1"},
                json={"model": "prod", "kind": "delete_records", "record_ids": ids[:3].tolist()},
            )
            job = wait_job(c, r.json()["job_id"])
            assert job["status"] == "succeeded", job
            assert c.get("/v1/models/prod").json()["current_version"] == 2
            assert c.get("/v1/audit/verify").json()["ok"] is True
            assert np.isfinite(job["result"]["metrics"]["update_norm"])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
