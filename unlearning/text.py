"""Text corpora for the character language model (``char_lstm``): vocabulary, training windows,
an occurrence index, the ``rectify_text`` change set, completion and log-perplexity.

Training points of a corpus ``text`` with window T and stride s: for every start
p = 0, s, 2s, … with p + T < len(text), x = the indices of text[p : p+T] (float32 row of
length T) and y = the index of text[p+T]. A point *touches* the characters
text[p : p+T+1]. Indices refer to the vocabulary: the sorted distinct characters of the
corpus (a string; index i ↔ vocabulary[i]); its size is the model's ``n_classes``.

Log-perplexities are in **bits** (base 2), computed with teacher forcing: each character of the
continuation is scored given the true preceding characters, with the same context rule as
training (the last T characters, fewer at the start).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .architectures import flatten, get_spec
from .model import TrainedModel
from .objective import Objective
from .options import TrainingOptions


def build_vocabulary(text: str) -> str:
    """The sorted distinct characters of ``text`` (index order of the model's classes)."""
    vocab = "".join(sorted(set(text)))
    if len(vocab) < 2:
        raise ValueError("a text corpus needs at least two distinct characters")
    return vocab


def encode(text: str, vocabulary: str) -> np.ndarray:
    """Character indices (len(text),) int64; ValueError naming characters not in the vocabulary."""
    table = {c: i for i, c in enumerate(vocabulary)}
    try:
        return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))
    except KeyError:
        missing = sorted(set(text) - set(table))
        raise ValueError(f"characters not in the model's vocabulary: {missing!r}") from None


def decode(indices: Sequence[int] | np.ndarray, vocabulary: str) -> str:
    """Inverse of :func:`encode`."""
    return "".join(vocabulary[int(i)] for i in indices)


def window_starts(length: int, window: int, stride: int = 1) -> np.ndarray:
    """Start positions p of the training windows of a text of ``length`` characters."""
    if window < 1 or stride < 1:
        raise ValueError("window and stride must be >= 1")
    return np.arange(0, max(0, length - window), stride, dtype=np.int64)


def windows(
    text: str, window: int, stride: int = 1, vocabulary: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Training points of ``text``: X (n, window) float32 character indices, y (n,) int64.

    ``vocabulary`` None → :func:`build_vocabulary` of ``text``.
    """
    vocab = build_vocabulary(text) if vocabulary is None else vocabulary
    codes = encode(text, vocab)
    starts = window_starts(len(text), window, stride)
    if starts.size == 0:
        return np.zeros((0, window), np.float32), np.zeros(0, np.int64)
    X = codes[starts[:, None] + np.arange(window)[None, :]].astype(np.float32)
    return X, codes[starts + window]


class TextIndex:
    """Suffix array of a text: finds every occurrence of a string in O(m log n) comparisons
    (m = its length) instead of scanning the text. Build once per dataset version (O(n log² n),
    NumPy prefix doubling); ``suffixes`` (n,) int64 can be stored and passed back in."""

    def __init__(self, text: str, suffixes: np.ndarray | None = None) -> None:
        self.text = text
        self.suffixes = _suffix_array(text) if suffixes is None else np.asarray(suffixes)
        if self.suffixes.shape != (len(text),):
            raise ValueError("suffix array does not match the text")

    def occurrences(self, find: str) -> np.ndarray:
        """Sorted start positions of every (possibly overlapping) occurrence of ``find``."""
        if not find:
            raise ValueError("the string to find must not be empty")
        m, text, sa = len(find), self.text, self.suffixes
        lo = bisect.bisect_left(sa, find, key=lambda p: text[p : p + m])
        hi = bisect.bisect_right(sa, find, key=lambda p: text[p : p + m])
        return np.sort(sa[lo:hi])

    def matches(self, find: str) -> np.ndarray:
        """Start positions of the non-overlapping occurrences that ``str.replace`` rewrites
        (leftmost first)."""
        out: list[int] = []
        end = -1
        for p in self.occurrences(find).tolist():
            if p >= end:
                out.append(p)
                end = p + len(find)
        return np.asarray(out, dtype=np.int64)


def _suffix_array(text: str) -> np.ndarray:
    n = len(text)
    if n == 0:
        return np.zeros(0, np.int64)
    rank = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    k = 1
    while True:
        second = np.full(n, -1, dtype=np.int64)
        if k < n:
            second[: n - k] = rank[k:]
        sa = np.lexsort((second, rank))
        r1, r2 = rank[sa], second[sa]
        new_keys = np.concatenate([[0], np.cumsum((r1[1:] != r1[:-1]) | (r2[1:] != r2[:-1]))])
        rank = np.empty(n, dtype=np.int64)
        rank[sa] = new_keys
        if new_keys[-1] == n - 1 or k >= n:
            return sa
        k *= 2


def affected_windows(
    text: str,
    find: str,
    window: int,
    stride: int = 1,
    index: TextIndex | None = None,
) -> np.ndarray:
    """Indices (into :func:`windows` order) of the training points touching an occurrence of
    ``find`` (those :func:`rectify` rewrites). Uses ``index`` (built when None)."""
    idx = index if index is not None else TextIndex(text)
    starts = window_starts(len(text), window, stride)
    return _touching(idx.matches(find), len(find), window, starts)


def _touching(occ: np.ndarray, m: int, window: int, starts: np.ndarray) -> np.ndarray:
    """Indices i with starts[i] ∈ [p − window, p + m − 1] for some occurrence p."""
    if occ.size == 0 or starts.size == 0:
        return np.zeros(0, np.int64)
    stride = int(starts[1] - starts[0]) if starts.size > 1 else 1
    sel: set[int] = set()
    for p in occ.tolist():
        lo = max(0, -(-(p - window) // stride))
        hi = min(starts.size - 1, (p + m - 1) // stride)
        sel.update(range(lo, hi + 1))
    return np.asarray(sorted(sel), dtype=np.int64)


@dataclass
class Rectification:
    """Result of :func:`rectify`.

    - ``text``: the corrected corpus (``old.replace(find, replace)``).
    - ``Z_X`` (m, T) float32 / ``Z_y`` (m,) int64: the old training points touching an
      occurrence; ``Zt_X`` (m̃, T) / ``Zt_y``: the new points touching a replacement (the same
      windows rewritten; m̃ = m when len(find) == len(replace)).
    - ``X_after`` / ``y_after``: the corrected training set D' = ``windows(text, T, stride)``,
      which equals (D \\ Z) ∪ Z̃ (stride > 1 requires len(find) == len(replace)).
    - ``old_windows`` / ``new_windows``: indices of Z in the old windows, of Z̃ in ``X_after``.
    - ``occurrences``: start positions of the rewritten occurrences in the old text.
    """

    text: str
    Z_X: np.ndarray
    Z_y: np.ndarray
    Zt_X: np.ndarray
    Zt_y: np.ndarray
    X_after: np.ndarray
    y_after: np.ndarray
    old_windows: np.ndarray
    new_windows: np.ndarray
    occurrences: np.ndarray


def rectify(
    text: str,
    find: str,
    replace: str,
    *,
    window: int,
    vocabulary: str,
    stride: int = 1,
    index: TextIndex | None = None,
) -> Rectification:
    """Replace every (non-overlapping, leftmost-first) occurrence of ``find`` by ``replace`` and
    return the change set of a ``rectify_text`` request (see :class:`Rectification`).

    ``window``/``vocabulary`` are the model's (``architecture["window"]``,
    ``architecture["vocabulary"]``); ``replace`` may only use vocabulary characters (the output
    layer cannot grow). ``index``: a :class:`TextIndex` of ``text`` (built when None).
    """
    if find == "":
        raise ValueError("'find' must not be empty")
    encode(replace, vocabulary)  # ValueError for characters the model cannot represent
    idx = index if index is not None else TextIndex(text)
    occ = idx.matches(find)
    m, r = len(find), len(replace)
    # New text and the positions of the replacements in it.
    pieces, new_occ, prev, shift = [], [], 0, 0
    for p in occ.tolist():
        pieces.append(text[prev:p])
        pieces.append(replace)
        new_occ.append(p + shift)
        shift += r - m
        prev = p + m
    pieces.append(text[prev:])
    new_text = "".join(pieces)
    if stride != 1 and m != r:
        raise ValueError("with stride > 1 the replacement must have the length of the string")
    X_old, y_old = windows(text, window, stride, vocabulary)
    z_idx = _touching(occ, m, window, window_starts(len(text), window, stride))
    X_after, y_after = windows(new_text, window, stride, vocabulary)
    if m == r:  # same grid: the same windows, rewritten
        zt_idx = z_idx
    else:  # stride 1: windows touching a replacement (or, for r = 0, both sides of the cut)
        new_starts = window_starts(len(new_text), window, 1)
        zt_idx = _touching(np.asarray(new_occ, np.int64), r, window, new_starts)
    return Rectification(
        text=new_text,
        Z_X=X_old[z_idx],
        Z_y=y_old[z_idx],
        Zt_X=X_after[zt_idx],
        Zt_y=y_after[zt_idx],
        X_after=X_after,
        y_after=y_after,
        old_windows=z_idx,
        new_windows=zt_idx,
        occurrences=occ,
    )


def text_architecture(architecture: dict, text: str) -> dict:
    """The normalised ``char_lstm`` architecture with ``vocabulary`` set from ``text`` (kept if
    already given: it must cover the corpus)."""
    spec = get_spec(architecture)
    if spec.kind != "char_lstm":
        raise ValueError(f"text corpora train a 'char_lstm', got '{spec.kind}'")
    arch = spec.normalize(architecture)
    if "vocabulary" in arch:
        encode(text, arch["vocabulary"])
    else:
        arch["vocabulary"] = build_vocabulary(text)
    return arch


def training_data(architecture: dict, text: str) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """(normalised architecture with vocabulary, X (n, T) float32, y (n,) int64, n_classes) of a
    corpus, windows of stride 1 (every character after the first T is a target)."""
    arch = text_architecture(architecture, text)
    X, y = windows(text, arch["window"], 1, arch["vocabulary"])
    if len(y) == 0:
        raise ValueError(f"corpus shorter than window + 1 = {arch['window'] + 1} characters")
    return arch, X, y, len(arch["vocabulary"])


def train_text(
    architecture: dict, text: str, options: TrainingOptions
) -> tuple[TrainedModel, dict]:
    """Train a ``char_lstm`` on a corpus (vocabulary from the corpus, stride-1 windows)."""
    from .deep import train_deep

    arch, X, y, k = training_data(architecture, text)
    return train_deep(arch, X, y, k, options)


def _model_parts(model: TrainedModel) -> tuple[Objective, torch.Tensor, str, int]:
    arch = model.architecture
    if arch.get("kind") != "char_lstm" or "vocabulary" not in arch:
        raise ValueError("a char_lstm model with a recorded vocabulary is required")
    obj = Objective.for_model(model)
    dtype = next(iter(model.params.values())).dtype
    theta = flatten(model.params, obj.shapes).to(dtype)
    return obj, theta, arch["vocabulary"], int(arch["window"])


@torch.no_grad()
def complete(
    model: TrainedModel, prefix: str, n_chars: int, greedy: bool = True, seed: int = 0
) -> str:
    """Continue ``prefix`` by ``n_chars`` characters (the continuation only).

    Each step feeds the last ``window`` characters (fewer at the start) and takes the most
    probable next character (``greedy``) or samples it (seeded generator).
    """
    obj, theta, vocab, T = _model_parts(model)
    codes = encode(prefix, vocab).tolist()
    if not codes:
        raise ValueError("prefix must not be empty")
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    for _ in range(n_chars):
        ctx = torch.tensor([codes[-T:]], dtype=theta.dtype)
        probs = obj.spec.probabilities(obj.logits(theta, ctx))[0]
        nxt = int(probs.argmax()) if greedy else int(torch.multinomial(probs, 1, generator=gen))
        codes.append(nxt)
        out.append(nxt)
    return decode(out, vocab)


@torch.no_grad()
def log_perplexities(
    model: TrainedModel, prefix: str, continuations: Sequence[str], batch_size: int = 4096
) -> np.ndarray:
    """−Σ_i log₂ P(c_i | prefix + c_<i) for each continuation c (teacher forcing), float64 (k,).

    Continuations of equal length are scored together (one batched forward per position).
    """
    obj, theta, vocab, T = _model_parts(model)
    pre = encode(prefix, vocab)
    out = np.zeros(len(continuations), dtype=np.float64)
    by_len: dict[int, list[int]] = {}
    for j, c in enumerate(continuations):
        by_len.setdefault(len(c), []).append(j)
    for length, members in by_len.items():
        if length == 0:
            continue
        C = np.stack([encode(continuations[j], vocab) for j in members])  # (k, length)
        full = np.concatenate([np.broadcast_to(pre, (len(members), len(pre))), C], axis=1)
        total = np.zeros(len(members))
        for i in range(length):
            end = len(pre) + i  # predict full[:, end] from the preceding characters
            if end == 0:
                raise ValueError("prefix must not be empty")
            ctx = full[:, max(0, end - T) : end]
            for s in range(0, len(members), batch_size):
                xb = torch.as_tensor(ctx[s : s + batch_size], dtype=theta.dtype)
                logp = torch.log_softmax(obj.logits(theta, xb), dim=1)
                tgt = torch.as_tensor(full[s : s + batch_size, end])
                total[s : s + batch_size] -= logp.gather(1, tgt[:, None])[:, 0].double().numpy()
        out[members] = total / np.log(2.0)
    return out


def log_perplexity(model: TrainedModel, prefix: str, continuation: str) -> float:
    """Log-perplexity in bits of ``continuation`` after ``prefix`` (teacher forcing)."""
    return float(log_perplexities(model, prefix, [continuation])[0])
