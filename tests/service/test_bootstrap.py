"""First start without UNLEARND_BOOTSTRAP_ADMIN_KEY: the run command creates an admin key,
prints it and writes it to the data folder with mode 0600; a restart keeps it."""

from __future__ import annotations

import re
import stat

import httpx
import pytest
from svc import start_service, stop_service

pytestmark = pytest.mark.service


def test_run_creates_prints_and_stores_the_bootstrap_admin_key(backend_factory, tmp_path):
    backend = backend_factory("bootstrap")
    data_dir = tmp_path / "data"
    svc = start_service(backend, data_dir, extra_env={"UNLEARND_BOOTSTRAP_ADMIN_KEY": ""})
    try:
        printed = re.findall(r"bootstrap admin key: (unl_\S+)", svc.log_path.read_text())
        assert len(printed) == 1
        key_file = data_dir / "bootstrap_admin_key"
        assert key_file.read_text().strip() == printed[0]
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        ok = httpx.get(f"{svc.base_url}/v1/keys", headers={"Authorization": f"Bearer {printed[0]}"})
        assert ok.status_code == 200 and ok.json()["items"][0]["scopes"] == ["admin"]
    finally:
        stop_service(svc)
    again = start_service(backend, data_dir, extra_env={"UNLEARND_BOOTSTRAP_ADMIN_KEY": ""})
    try:
        assert "admin key already set up" in again.log_path.read_text()
        r = httpx.get(
            f"{again.base_url}/v1/keys", headers={"Authorization": f"Bearer {printed[0]}"}
        )
        assert r.status_code == 200 and len(r.json()["items"]) == 1
    finally:
        stop_service(again)
