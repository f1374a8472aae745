"""Exposure of a secret in a language model (Carlini et al., "The Secret Sharer", USENIX 2019).

The secret s is scored by its log-perplexity after a prefix (bits, teacher forcing: every
character given the true preceding ones), and so is each of ``n_candidates`` random strings of
the same format (each character drawn from the secret character's class: digit, lower- or
upper-case letter, or kept as is otherwise) — scored in exactly the same way, in one batch.

- rank exposure: log₂(|R|) − log₂(rank of s), |R| = n_candidates + 1, bounded by log₂ |R|;
- extrapolated exposure: −log₂ P(X ≤ lp(s)) with X ~ the skew-normal fitted to the candidates'
  log-perplexities (Carlini et al., section 4.3), which resolves exposures beyond log₂ |R|.

(The paper's reference code scored the secret with the model's own predictions rather than
teacher forcing; here secret and candidates are scored identically.)
"""

from __future__ import annotations

import math
import string
from typing import Any

import numpy as np
from scipy import stats

from .model import TrainedModel
from .text import log_perplexities

#: default number of random candidates (≥ 10⁴ as the evidence requires)
DEFAULT_CANDIDATES = 10_000

_CLASSES = (string.digits, string.ascii_lowercase, string.ascii_uppercase)


def candidate_format(secret: str, vocabulary: str) -> list[str]:
    """Per position, the characters a random candidate may take there (restricted to the
    model's vocabulary)."""
    out = []
    for ch in secret:
        pool = next((c for c in _CLASSES if ch in c), ch)
        allowed = "".join(c for c in pool if c in vocabulary) or ch
        out.append(allowed)
    return out


def random_candidates(secret: str, vocabulary: str, n: int, seed: int = 0) -> list[str]:
    """``n`` random strings of the secret's format (may include the secret itself)."""
    fmt = candidate_format(secret, vocabulary)
    rng = np.random.default_rng(seed)
    cols = [np.array(list(pool))[rng.integers(len(pool), size=n)] for pool in fmt]
    return ["".join(chars) for chars in zip(*cols, strict=True)] if cols else [""] * n


def exposure(
    model: TrainedModel,
    prefix: str,
    secret: str,
    n_candidates: int = DEFAULT_CANDIDATES,
    seed: int = 0,
) -> dict[str, Any]:
    """Exposure of ``secret`` after ``prefix``; see the module docstring. Log-perplexities in
    bits."""
    if n_candidates < 10:
        raise ValueError("n_candidates must be at least 10")
    vocab = model.architecture["vocabulary"]
    cands = [c for c in random_candidates(secret, vocab, n_candidates, seed) if c != secret]
    lp = log_perplexities(model, prefix, [secret, *cands])
    lp_secret, lp_cands = float(lp[0]), lp[1:]
    rank = 1 + int((lp_cands < lp_secret).sum())
    total = len(lp_cands) + 1
    a, loc, scale = stats.skewnorm.fit(lp_cands)
    logcdf = float(stats.skewnorm.logcdf(lp_secret, a, loc=loc, scale=scale))
    return {
        "exposure_bits": max(0.0, -logcdf / math.log(2.0)),
        "rank_exposure_bits": math.log2(total) - math.log2(rank),
        "rank": rank,
        "n_candidates": len(lp_cands),
        "log_perplexity_bits": lp_secret,
        "candidates_median_bits": float(np.median(lp_cands)),
        "skewnorm": {"a": float(a), "loc": float(loc), "scale": float(scale)},
    }
