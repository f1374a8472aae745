"""The schema is created by Alembic only, and the migrations match the ORM exactly."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

REPO = Path(__file__).resolve().parents[2]


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(REPO / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def test_migrations_match_the_models_and_round_trip(backend):
    from app.db import get_engine
    from app.orm import Base

    with get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"the ORM and the migrations disagree: {diff}"
    get_engine().dispose()
    cfg = _config(backend.database_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
    with get_engine().connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
