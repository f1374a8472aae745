"""Exposure: candidates follow the secret's format and are scored like the secret."""

from __future__ import annotations

import numpy as np
import pytest

from unlearning import TrainingOptions
from unlearning.exposure import candidate_format, exposure, random_candidates
from unlearning.text import log_perplexities, train_text

SECRET = "0123456789"


def test_candidates_have_the_secret_format():
    fmt = candidate_format("Ab3-x", "ABCabc0123456789-x")
    assert fmt == ["ABC", "abcx", "0123456789", "-", "abcx"]
    cands = random_candidates(SECRET, "0123456789 abc", 500, seed=1)
    assert len(cands) == 500 and all(len(c) == 10 and c.isdigit() for c in cands)
    assert len(set(cands)) > 490


@pytest.fixture(scope="module")
def memorising_model():
    rng = np.random.default_rng(0)
    words = ["tea ", "cake ", "key ", "queen ", "rabbit "]
    parts = []
    for i in range(300):
        parts.append(words[rng.integers(5)])
        if i % 30 == 0:
            parts.append(f"my number is {SECRET}. ")
    text = "".join(parts)
    arch = {"kind": "char_lstm", "hidden": 48, "layers": 1, "embedding": 16, "window": 16}
    model, _ = train_text(arch, text, TrainingOptions(epochs=15, lr=0.01, batch_size=64))
    return model


def test_exposure_of_a_memorised_secret_is_high_and_scored_by_teacher_forcing(memorising_model):
    prefix = "my number is "
    ex = exposure(memorising_model, prefix, SECRET, n_candidates=2000)
    # teacher forcing: the reported log-perplexity is exactly log_perplexities' value
    assert ex["log_perplexity_bits"] == pytest.approx(
        float(log_perplexities(memorising_model, prefix, [SECRET])[0])
    )
    assert ex["rank"] == 1 and ex["rank_exposure_bits"] == pytest.approx(np.log2(2000 + 1), abs=0.1)
    assert ex["exposure_bits"] > 15  # extrapolated beyond log2 of the candidate count
    other = exposure(memorising_model, prefix, "9876501234", n_candidates=2000)
    assert other["exposure_bits"] < ex["exposure_bits"]
