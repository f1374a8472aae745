"""From a request to its change set: Z (the affected training points as they are), Z̃ (the same
points corrected) and D' (the corrected training set), plus the new stored dataset.

Affected points are found through indexes, not by scanning the data per request: record id →
row and subject id → rows (built once per loaded dataset version), feature → the rows with a
non-zero value (a column read of the named features only), string → occurrences in a text
corpus (a suffix array, :class:`unlearning.text.TextIndex`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.datasets import TabularData, TextCorpus
from unlearning import TrainedModel
from workers.runner import JobFailed


@dataclass
class Change:
    """One request's change set. Arrays follow the model's input convention (rows of X)."""

    Z_X: np.ndarray
    Z_y: np.ndarray
    Zt_X: np.ndarray
    Zt_y: np.ndarray
    X_after: np.ndarray
    y_after: np.ndarray
    new_data: bytes
    n_records_after: int
    n_affected: int
    record_ids: list[str] = field(default_factory=list)
    subject_ids: list[str] = field(default_factory=list)
    already_erased: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    #: Efficacy check of an updated model: why it still holds the old data, or None.
    efficacy: Callable[[TrainedModel], str | None] | None = None
    #: the dataset's held-out split (X_test, y_test), when it has one
    held_out: tuple[np.ndarray, np.ndarray] | None = None
    #: Efficacy evidence of a model (e.g. the exposure of a rectified string), before/after.
    probe: Callable[[TrainedModel], dict[str, Any]] | None = None


def tabular_change(kind: str, payload: dict[str, Any], data: TabularData) -> Change:
    """Change set of a record-level request on a tabular dataset."""
    d = data.n_features
    if kind == "delete_records":
        if payload.get("subject_id"):
            rows = np.array(data.rows_of_subject.get(payload["subject_id"], []), dtype=np.int64)
            missing = 0
        else:
            ids = payload["record_ids"]
            found = [data.row_of[r] for r in ids if r in data.row_of]
            rows, missing = np.array(found, dtype=np.int64), len(ids) - len(found)
        if rows.size == 0:
            raise JobFailed(
                "None of the records of this request remain in the dataset: they were erased "
                "by an earlier request."
            )
        if rows.size >= data.n_records:
            raise JobFailed(
                "The request would erase every record of the dataset; delete the model instead."
            )
        rows.sort()
        after = data.without_rows(rows)
        return Change(
            data.X[rows],
            data.y[rows],
            np.zeros((0, d), data.X.dtype),
            np.zeros(0, np.int64),
            after.X,
            after.y,
            after.to_npz_bytes(),
            after.n_records,
            int(rows.size),
            data.record_ids[rows].tolist(),
            _subjects(data, rows),
            missing,
        )
    X_new, y_new = data.X.copy(), data.y.copy()
    if kind == "correct_labels":
        pairs = [
            (data.row_of[c["record_id"]], c["label"])
            for c in payload["corrections"]
            if c["record_id"] in data.row_of
        ]
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        for r, label in pairs:
            if label >= data.n_classes:
                raise JobFailed(f"Label {label} is not a class of this model.")
            y_new[r] = label
    elif kind == "correct_features":
        col = {n: j for j, n in enumerate(data.feature_names.tolist())}
        found = []
        for c in payload["corrections"]:
            if c["record_id"] not in data.row_of:
                continue
            r = data.row_of[c["record_id"]]
            found.append(r)
            for name, value in c["features"].items():
                X_new[r, col[name]] = value
        rows = np.array(found, dtype=np.int64)
    elif kind == "remove_features":
        col = {n: j for j, n in enumerate(data.feature_names.tolist())}
        cols = [col[n] for n in payload["features"]]
        rows = np.flatnonzero((data.X[:, cols] != 0).any(axis=1))
        X_new[np.ix_(rows, cols)] = 0
    else:
        raise JobFailed(f"Request kind '{kind}' does not apply to tabular models.")
    if rows.size == 0:
        raise JobFailed("The request affects no record of the current dataset.")
    after = TabularData(
        X_new,
        y_new,
        data.record_ids,
        data.subject_ids,
        data.feature_names,
        data.X_test,
        data.y_test,
    )
    return Change(
        data.X[rows],
        data.y[rows],
        X_new[rows],
        y_new[rows],
        X_new,
        y_new,
        after.to_npz_bytes(),
        after.n_records,
        int(rows.size),
        data.record_ids[rows].tolist(),
        _subjects(data, rows),
    )


#: Efficacy of ``rectify_text``: an update is rejected while the rectified string's exposure
#: (Carlini et al.; skew-normal estimate over EFFICACY_CANDIDATES random strings of its format)
#: exceeds this many bits — at 2 bits the string is no likelier than the most likely quarter of
#: random strings of its format.
EXPOSURE_MAX_BITS = 2.0
EFFICACY_CANDIDATES = 1000


def text_change(
    payload: dict[str, Any], corpus: TextCorpus, model: TrainedModel, n_candidates: int = 10_000
) -> Change:
    """Change set of ``rectify_text``: the training windows touching an occurrence of ``find``
    (Z) and the same windows rewritten (Z̃), over the model's vocabulary and window."""
    from unlearning.text import rectify

    arch = model.architecture
    try:
        rect = rectify(
            corpus.text,
            payload["find"],
            payload["replace"],
            window=int(arch["window"]),
            vocabulary=arch["vocabulary"],
        )
    except ValueError as exc:
        raise JobFailed(f"Cannot rectify the corpus: {exc}") from exc
    if rect.occurrences.size == 0:
        raise JobFailed("The string does not occur in the current corpus (rectified already?).")
    new = TextCorpus(rect.text)
    find, window = payload["find"], int(arch["window"])
    first = int(rect.occurrences[0])
    prefix = corpus.text[max(0, first - window) : first]

    def exposure_of_find(model: TrainedModel) -> dict[str, Any]:
        from unlearning.exposure import exposure

        out: dict[str, Any] = {"exposure": exposure(model, prefix, find, n_candidates)}
        from unlearning.text import complete

        out["completion"] = complete(model, prefix, len(find))
        return out

    def still_completes(model: TrainedModel) -> str | None:
        from unlearning.exposure import exposure
        from unlearning.text import complete

        if not prefix:
            return None
        if complete(model, prefix, len(find)) == find:
            return "the model still completes the rectified string from its context"
        # A changed completion is not enough: the string can still be far likelier than any
        # other of its format (a damped step changed the completion of a memorised phone
        # number, its exposure stayed at 30 bits). Same estimator as the probe, fewer candidates.
        e = exposure(model, prefix, find, min(n_candidates, EFFICACY_CANDIDATES))
        if e["exposure_bits"] > EXPOSURE_MAX_BITS:
            return (
                f"the rectified string is still exposed ({e['exposure_bits']:.1f} bits > "
                f"{EXPOSURE_MAX_BITS:g} over {e['n_candidates']} random strings of its format)"
            )
        return None

    return Change(
        rect.Z_X,
        rect.Z_y,
        rect.Zt_X,
        rect.Zt_y,
        rect.X_after,
        rect.y_after,
        new.to_bytes(),
        new.n_chars,
        int(max(len(rect.Z_y), len(rect.Zt_y))),
        details={
            "occurrences": int(rect.occurrences.size),
            "windows_removed": len(rect.Z_y),
            "windows_added": len(rect.Zt_y),
        },
        efficacy=still_completes,
        probe=exposure_of_find if prefix else None,
    )


def _subjects(data: TabularData, rows: np.ndarray) -> list[str]:
    return sorted({s for s in data.subject_ids[rows].tolist() if s})
