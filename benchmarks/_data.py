"""Loader of Fashion-MNIST in IDX format (Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

#: Where the Debian package puts the files; ``UNLEARND_FASHION_MNIST_DIR`` overrides it (a copy
#: carried to a machine without the package, e.g. the GPU check).
FASHION_DIR = Path(
    os.environ.get("UNLEARND_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
)


def _idx(path: Path) -> np.ndarray:
    """Parse one gzipped IDX file (magic 0x0000 08 ndim, big-endian sizes, uint8 data)."""
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    return data.reshape(dims)


def load_fashion_mnist(
    root: Path = FASHION_DIR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train (60000, 784), y_train, X_test (10000, 784), y_test); pixels/255 as float64."""
    out = []
    for split in ("train", "t10k"):
        X = _idx(root / f"{split}-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
        y = _idx(root / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
        out += [X.astype(np.float64), y]
    return out[0], out[1], out[2], out[3]
