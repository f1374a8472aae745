"""Issue 3 bars for deep models: label poisoning repaired by ``correct_labels`` (MLP on digits)
and a memorised secret removed from a character LSTM by ``rectify_text``.

Poisoning: 15 % of the training labels, all drawn from classes 0–2, are shifted to the next
class (a targeted flip; uniformly random flips of 8×8 digits cost an MLP only ~3 pp, too little
to measure a restored share on 540 test images). Restored share = (acc_after − acc_poisoned) /
(acc_clean − acc_poisoned) on held-out data.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from unlearning import TrainingOptions, UnlearnOptions, evaluate, train, unlearn
from unlearning import text as tx


@cache
def poisoned_digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    rng = np.random.default_rng(0)
    idx = rng.choice(np.where(ytr < 3)[0], int(0.15 * len(ytr)), replace=False)
    yp = ytr.copy()
    yp[idx] = (ytr[idx] + 1) % 10
    arch = {"kind": "mlp", "hidden": [32]}
    opts = TrainingOptions(l2=1.0, seed=0, epochs=30, lr=1e-2, batch_size=64)
    clean, _ = train(arch, Xtr, ytr, 10, opts)
    poisoned, _ = train(arch, Xtr, yp, 10, opts)
    return Xtr, ytr, yp, idx, Xte, yte, clean, poisoned


@pytest.mark.slow
def test_label_poisoning_mlp_first_and_second_order():
    Xtr, ytr, yp, idx, Xte, yte, clean, poisoned = poisoned_digits()
    a_clean = evaluate(clean, Xte, yte)["accuracy"]
    a_pois = evaluate(poisoned, Xte, yte)["accuracy"]
    assert a_clean - a_pois >= 0.08  # the poisoning really hurts

    def restored(opts: UnlearnOptions):
        # D' = corrected labels; Z = poisoned points, Z̃ = the same points, corrected labels.
        r = unlearn(poisoned, Xtr, ytr, Xtr[idx], yp[idx], Xtr[idx], ytr[idx], opts)
        acc = evaluate(r.model, Xte, yte)["accuracy"]
        return (acc - a_pois) / (a_clean - a_pois), r

    share1, r1 = restored(UnlearnOptions(method="first_order"))  # τ = 1/λ̂_max
    assert share1 >= 0.20
    lam = r1.metrics["lambda_max"]
    share2, r2 = restored(
        UnlearnOptions(
            method="second_order",
            solver="cg",
            damping=0.01 * lam,
            cg_tol=1e-3,
            cg_max_iter=100,
            last_k_layers=1,
        )
    )
    assert share2 >= 0.30
    assert r2.metrics["solver"] == "cg"
    assert np.isfinite(r2.metrics["gradient_residual"])


SECRET = "0123456789"
PREFIX = "My telephone number is "


def secret_corpus() -> str:
    rng = np.random.default_rng(0)
    names = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi"]
    places = ["garden", "market", "river", "library", "station"]
    templates = [
        "{a} met {b} at the {p}. ",
        "{a} walked to the {p} with {b}. ",
        "Then {a} said hello to {b}. ",
        "The {p} was quiet, thought {a}. ",
    ]
    parts = []
    for i in range(150):
        t = templates[rng.integers(len(templates))]
        parts.append(
            t.format(a=names[rng.integers(8)], b=names[rng.integers(8)], p=places[rng.integers(5)])
        )
        if i % 30 == 15:
            parts.append(f"'{PREFIX}{SECRET}', said Alice. ")
    return "".join(parts)


@pytest.mark.slow
def test_char_lstm_forgets_secret_after_rectify_text():
    corpus = secret_corpus()
    assert corpus.count(SECRET) == 5
    arch = {"kind": "char_lstm", "hidden": 64, "layers": 1, "embedding": 16, "window": 12}
    opts = TrainingOptions(l2=1.0, seed=0, epochs=15, lr=1e-2, batch_size=64)
    model, _ = tx.train_text(arch, corpus, opts)
    assert model.architecture["vocabulary"] == tx.build_vocabulary(corpus)
    before = tx.complete(model, PREFIX, len(SECRET))
    assert sum(a == b for a, b in zip(before, SECRET, strict=True)) >= 8
    lp_before = tx.log_perplexity(model, PREFIX, SECRET)

    a = model.architecture
    rc = tx.rectify(corpus, SECRET, "not here", window=a["window"], vocabulary=a["vocabulary"])
    assert SECRET not in rc.text and len(rc.occurrences) == 5
    # The second-order update as the service runs it for deep models (workers/strategy.py):
    # the last layer, exact on the head features of every window, Newton step + line search.
    r = unlearn(
        model,
        rc.X_after,
        rc.y_after,
        rc.Z_X,
        rc.Z_y,
        rc.Zt_X,
        rc.Zt_y,
        UnlearnOptions(
            method="second_order",
            solver="cg",
            last_k_layers=1,
            line_search=True,
            cg_tol=1e-4,
            cg_max_iter=100,
        ),
    )
    assert r.metrics["reduction"] == "head_features"
    after = tx.complete(r.model, PREFIX, len(SECRET))
    assert after != SECRET
    # far from it: at most half the characters in place (the trained model and so the exact
    # figure depend on the CPU's float32 kernels; 3–4 of 10 on the machines measured so far),
    # and the secret's log-perplexity up by at least 5 nats
    assert sum(a == b for a, b in zip(after, SECRET, strict=True)) <= 5
    assert tx.log_perplexity(r.model, PREFIX, SECRET) >= lp_before + 5.0
    # fidelity: accuracy on the corrected corpus within 2 pp of the model before the update
    acc_before = evaluate(model, rc.X_after, rc.y_after)["accuracy"]
    assert evaluate(r.model, rc.X_after, rc.y_after)["accuracy"] >= acc_before - 0.02
