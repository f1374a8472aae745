"""Content-addressed artifact storage: model weights (safetensors) and dataset versions (npz).

Artifacts are named by the SHA-256 of their bytes. :class:`ArtifactStore` is the interface an
object store (S3, GCS) implements; :class:`LocalStore` is the default, a folder on disk.
"""

from models_store.store import ArtifactNotFound, ArtifactStore, LocalStore, get_store

__all__ = ["ArtifactNotFound", "ArtifactStore", "LocalStore", "get_store"]
