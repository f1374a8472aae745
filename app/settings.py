"""The one settings object of unlearnd, read from ``UNLEARND_*`` environment variables.

Embedded defaults (nothing set): SQLite database, Celery broker over SQLite (kombu's SQLAlchemy
transport), artifacts in ``$UNLEARND_DATA_DIR`` (default ``./var``). Production sets
``UNLEARND_DATABASE_URL=postgresql+psycopg://…``, ``UNLEARND_BROKER_URL=redis://…`` and
``UNLEARND_SECRET_KEY``.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration. Every field maps to ``UNLEARND_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="UNLEARND_", extra="ignore")

    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    broker_url: str | None = None
    bootstrap_admin_key: str | None = None
    secret_key: str | None = Field(
        default=None,
        description="HMAC key for API-key hashes and audit-log pseudonyms. Generated into the "
        "data folder when unset (embedded mode); set it explicitly in production.",
    )
    queue: str = "gpu"
    job_lease_s: float = 120.0
    job_max_attempts: int = 3
    redispatch_after_s: float = 60.0
    reconcile_interval_s: float = 10.0
    run_reconciler: bool = True
    max_upload_bytes: int = 1 << 30
    exact_max_params: int = 5000
    exposure_candidates: int = Field(
        default=10_000, ge=100, description="Random candidates scored for a secret's exposure."
    )
    device: str = "auto"
    # Redis visibility timeout: longer than the longest job, or Redis redelivers mid-run.
    broker_visibility_timeout_s: int = 12 * 3600

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'unlearnd.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    def resolved_secret_key(self) -> bytes:
        """The server secret; created (mode 0600) in the data folder on first use if unset."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache
def get_settings() -> Settings:
    return Settings()
