"""Artifact stores. Writes are atomic (temporary file + rename) and idempotent: putting the same
bytes twice yields the same key and one file."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from functools import lru_cache
from pathlib import Path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactNotFound(KeyError):
    """No artifact with this key (never written, or erased)."""


class ArtifactStore(ABC):
    """Interface of a content-addressed blob store. Keys are lowercase hex SHA-256 digests."""

    @abstractmethod
    def put(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256 hex digest (the key)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the bytes stored under ``key``; raise :class:`ArtifactNotFound`."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Erase the artifact; return whether it existed. Used when records must be erased."""


class LocalStore(ArtifactStore):
    """Artifacts under ``root/sha256/ab/abcdef…`` on a local (or shared network) file system."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _SHA256.match(key):
            raise ArtifactNotFound(key)
        return self.root / "sha256" / key[:2] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if path.exists():
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(key) from exc

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).exists()
        except ArtifactNotFound:
            return False

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
            return True
        except (FileNotFoundError, ArtifactNotFound):
            return False


@lru_cache
def get_store(root: str) -> ArtifactStore:
    """The store for a root folder (cached per process)."""
    return LocalStore(root)
