"""A migrated database and broker of their own (per tier) for in-process tests of the job
machinery: leases, reconciliation, version uniqueness, the audit chain, migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


def _clear_caches() -> None:
    from app.db import get_engine, get_sessionmaker
    from app.settings import get_settings
    from models_store import get_store

    if get_engine.cache_info().currsize:
        get_engine().dispose()
    for fn in (get_settings, get_engine, get_sessionmaker, get_store):
        fn.cache_clear()


@pytest.fixture(scope="module")
def backend(backend_factory, tmp_path_factory) -> Iterator:  # type: ignore[no-untyped-def]
    b = backend_factory("worker")
    data_dir = tmp_path_factory.mktemp("worker-data")
    saved = {
        k: os.environ.get(k)
        for k in (
            "UNLEARND_DATABASE_URL",
            "UNLEARND_BROKER_URL",
            "UNLEARND_QUEUE",
            "UNLEARND_DATA_DIR",
        )
    }
    os.environ.update(
        UNLEARND_DATABASE_URL=b.database_url,
        UNLEARND_BROKER_URL=b.broker_url,
        UNLEARND_QUEUE=b.queue,
        UNLEARND_DATA_DIR=str(data_dir),
    )
    _clear_caches()
    from app.cli import migrate

    migrate(wait_s=10)
    yield b
    _clear_caches()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
