"""Fixtures: one real unlearnd service per test session, and an admin HTTP client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from svc import Service, start_service, stop_service


@pytest.fixture(scope="session")
def service(backend_factory, tmp_path_factory) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    svc = start_service(
        backend_factory("service"),
        tmp_path_factory.mktemp("service"),
        # fewer exposure candidates than the default 10⁴ keep the language-model test short
        extra_env={"UNLEARND_EXPOSURE_CANDIDATES": "2000"},
    )
    yield svc
    stop_service(svc)


@pytest.fixture
def admin(service: Service) -> Iterator[httpx.Client]:
    with service.client() as c:
        yield c
