"""Tabular datasets: validation of uploads, the canonical stored form, and loading.

A dataset version is stored as one uncompressed ``.npz`` (no pickled objects) holding
``X`` (n, d) float32/float64, ``y`` (n,) int64 labels in ``[0, k)``, ``record_ids`` (n,) unicode,
``subject_ids`` (n,) unicode (empty strings when unknown) and ``feature_names`` (d,) unicode.
Uploads are always read with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from app.errors import InvalidInput

MAX_ID_LENGTH = 200


@dataclass
class TabularData:
    """One dataset version in memory. Row ``i`` of every array is record ``record_ids[i]``."""

    X: np.ndarray
    y: np.ndarray
    record_ids: np.ndarray
    subject_ids: np.ndarray
    feature_names: np.ndarray
    #: the dataset's own held-out split (optional; evaluation only, never trained on)
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def n_records(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1 if self.y.size else 0

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Index record id → row, built once per loaded version (no scan per request)."""
        return {rid: i for i, rid in enumerate(self.record_ids.tolist())}

    @cached_property
    def rows_of_subject(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, sid in enumerate(self.subject_ids.tolist()):
            if sid:
                out.setdefault(sid, []).append(i)
        return out

    def without_rows(self, rows: np.ndarray) -> TabularData:
        keep = np.ones(self.n_records, dtype=bool)
        keep[rows] = False
        return TabularData(
            self.X[keep],
            self.y[keep],
            self.record_ids[keep],
            self.subject_ids[keep],
            self.feature_names,
            self.X_test,
            self.y_test,
        )

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        held_out = {} if self.X_test is None else {"X_test": self.X_test, "y_test": self.y_test}
        np.savez(
            buf,
            X=self.X,
            y=self.y,
            record_ids=self.record_ids,
            subject_ids=self.subject_ids,
            feature_names=self.feature_names,
            **held_out,
        )
        return buf.getvalue()


def _as_str_array(arr: np.ndarray, name: str, n: int) -> np.ndarray:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidInput(f"'{name}' must be a 1-D array of length {n}; got shape {arr.shape}.")
    if arr.dtype.kind not in "iuU":
        raise InvalidInput(
            f"'{name}' must hold strings or integers; got dtype {arr.dtype}. Save it with "
            "np.array(ids, dtype=str)."
        )
    out = arr.astype(str)
    if out.size and max(len(s) for s in out.tolist()) > MAX_ID_LENGTH:
        raise InvalidInput(f"'{name}' entries must be at most {MAX_ID_LENGTH} characters.")
    return out


def parse_npz(data: bytes) -> TabularData:
    """Validate an uploaded ``.npz``; raise :class:`InvalidInput` saying what to fix."""
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InvalidInput(
            "The file is not a readable .npz archive (np.savez output expected): " + str(exc)
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidInput("Expected an .npz archive (np.savez) with arrays X, y and record_ids.")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        missing = [k for k in ("X", "y", "record_ids") if k not in archive.files]
        if missing:
            raise InvalidInput(
                f"The archive lacks required arrays {missing}; it holds {sorted(archive.files)}."
            )
        for key in archive.files:
            try:
                value = archive[key]
            except ValueError as exc:  # object arrays need pickle: refused
                raise InvalidInput(
                    f"Array '{key}' cannot be loaded without pickle (object dtype?). Store "
                    "numbers as numeric arrays and ids as fixed-width strings (dtype=str)."
                ) from exc
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InvalidInput(f"Array '{key}' is corrupt: {exc}") from exc
            if not isinstance(value, np.ndarray):  # a member that is not an .npy file
                raise InvalidInput(
                    f"Member '{key}' of the archive is not a NumPy array (.npy); write the "
                    "archive with np.savez."
                )
            arrays[key] = value
    X, y = arrays["X"], arrays["y"]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidInput(
            f"'X' must be a non-empty 2-D array (records × features); got {X.shape}."
        )
    if X.dtype.kind not in "fiub":
        raise InvalidInput(f"'X' must be numeric; got dtype {X.dtype}.")
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64)
    if not np.isfinite(X).all():
        raise InvalidInput("'X' contains NaN or infinite values; impute or drop them first.")
    n, d = X.shape
    if y.ndim != 1 or y.shape[0] != n:
        raise InvalidInput(
            f"'y' must be a 1-D array with one label per row of X ({n}); got shape {y.shape}."
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise InvalidInput("'y' must hold integer class labels 0..k-1.")
    elif y.dtype.kind not in "iub":
        raise InvalidInput(f"'y' must hold integer class labels 0..k-1; got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise InvalidInput("'y' must hold class labels 0..k-1; found negative labels.")
    if int(y.max()) >= n:
        raise InvalidInput(
            f"'y' must hold class labels 0..k-1 with k at most the number of records ({n}); "
            f"found label {int(y.max())}. Re-encode the labels, e.g. with np.unique(y, "
            "return_inverse=True)."
        )
    if len(np.unique(y)) < 2:
        raise InvalidInput("'y' must contain at least two classes.")
    record_ids = _as_str_array(arrays["record_ids"], "record_ids", n)
    uniq, counts = np.unique(record_ids, return_counts=True)
    if len(uniq) != n:
        dupes = uniq[counts > 1][:5].tolist()
        raise InvalidInput(f"'record_ids' must be unique; duplicated: {dupes}.")
    if "" in record_ids.tolist():
        raise InvalidInput("'record_ids' must not contain empty strings.")
    if "subject_ids" in arrays:
        subject_ids = _as_str_array(arrays["subject_ids"], "subject_ids", n)
    else:
        subject_ids = np.full(n, "", dtype="<U1")
    if "feature_names" in arrays:
        feature_names = _as_str_array(arrays["feature_names"], "feature_names", d)
        if len(set(feature_names.tolist())) != d:
            raise InvalidInput("'feature_names' must be unique.")
    else:
        feature_names = np.array([f"f{j}" for j in range(d)])
    X_test, y_test = _held_out(arrays, d, int(y.max()) + 1)
    return TabularData(X, y, record_ids, subject_ids, feature_names, X_test, y_test)


def _held_out(
    arrays: dict[str, np.ndarray], d: int, k: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional held-out split ``X_test`` (m, d) / ``y_test`` (m,), validated."""
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise InvalidInput("Give both 'X_test' and 'y_test' for a held-out split, or neither.")
    if "X_test" not in arrays:
        return None, None
    X_test, y_test = arrays["X_test"], arrays["y_test"]
    if X_test.ndim != 2 or X_test.shape[1] != d or X_test.shape[0] == 0:
        raise InvalidInput(f"'X_test' must have shape (m, {d}); got {X_test.shape}.")
    if X_test.dtype.kind not in "fiub" or not np.isfinite(X_test).all():
        raise InvalidInput("'X_test' must hold finite numbers.")
    if y_test.ndim != 1 or y_test.shape[0] != X_test.shape[0]:
        raise InvalidInput("'y_test' must have one label per row of 'X_test'.")
    if y_test.dtype.kind not in "iub" or y_test.min() < 0 or y_test.max() >= k:
        raise InvalidInput(f"'y_test' must hold the training classes 0..{k - 1}.")
    return X_test.astype(np.float64), y_test.astype(np.int64)


def load_stored(data: bytes) -> TabularData:
    """Load a stored (already validated) dataset version."""
    with np.load(io.BytesIO(data), allow_pickle=False) as a:
        held = (a["X_test"], a["y_test"]) if "X_test" in a.files else (None, None)
        return TabularData(
            a["X"], a["y"], a["record_ids"], a["subject_ids"], a["feature_names"], *held
        )


@dataclass
class TextCorpus:
    """A UTF-8 text corpus (``kind=text``), the training data of character language models.
    Stored as its UTF-8 bytes; the vocabulary is the set of its characters."""

    text: str

    @property
    def n_chars(self) -> int:
        return len(self.text)

    @property
    def vocabulary_size(self) -> int:
        return len(set(self.text))

    def to_bytes(self) -> bytes:
        return self.text.encode("utf-8")


MIN_CORPUS_CHARS = 64


def parse_text(data: bytes) -> TextCorpus:
    """Validate an uploaded text corpus; raise :class:`InvalidInput` saying what to fix."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"The corpus is not valid UTF-8 (byte {exc.start}): re-encode it as UTF-8."
        ) from exc
    text = text.removeprefix("\ufeff")
    if len(text) < MIN_CORPUS_CHARS:
        raise InvalidInput(
            f"The corpus has {len(text)} characters; a language model needs at least "
            f"{MIN_CORPUS_CHARS}."
        )
    if "\x00" in text:
        raise InvalidInput("The corpus contains NUL characters; upload plain text.")
    return TextCorpus(text)


def load_text(data: bytes) -> TextCorpus:
    return TextCorpus(data.decode("utf-8"))
