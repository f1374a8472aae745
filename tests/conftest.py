"""Test tiers. ``UNLEARND_TEST_TIER=embedded`` (default): SQLite + kombu's SQLite broker.
``UNLEARND_TEST_TIER=postgres``: a fresh PostgreSQL database on 127.0.0.1:5432 and Redis on
127.0.0.1:6379 with a queue of its own. In the postgres tier an unreachable server FAILS the run
(never skips): CI must not report a tier that did not run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

TIER = os.environ.get("UNLEARND_TEST_TIER", "embedded")
PG_ADMIN_URL = os.environ.get(
    "UNLEARND_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("UNLEARND_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class Backend:
    """Where one test environment keeps its state."""

    database_url: str
    broker_url: str
    queue: str


def pytest_report_header(config: pytest.Config) -> str:
    return f"unlearnd test tier: {TIER}"


def _create_pg_database() -> str:
    import psycopg

    name = f"unlearnd_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        pytest.exit(f"postgres tier: PostgreSQL at {PG_ADMIN_URL} is unreachable: {exc}", 3)
    return name


def _drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _check_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        pytest.exit(f"postgres tier: Redis at {REDIS_URL} is unreachable: {exc}", 3)


@pytest.fixture(scope="session")
def backend_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Make fresh, isolated backends (database + broker + queue) for the current tier."""
    created: list[str] = []

    def make(label: str) -> Backend:
        queue = f"gpu-test-{uuid.uuid4().hex[:8]}"
        if TIER == "postgres":
            _check_redis()
            name = _create_pg_database()
            created.append(name)
            base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            return Backend(f"{base}/{name}", REDIS_URL, queue)
        if TIER != "embedded":
            pytest.exit(f"unknown UNLEARND_TEST_TIER={TIER!r}", 3)
        d = tmp_path_factory.mktemp(f"db-{label}")
        return Backend(f"sqlite:///{d / 'unlearnd.db'}", f"sqla+sqlite:///{d / 'broker.db'}", queue)

    yield make
    for name in created:
        _drop_pg_database(name)
