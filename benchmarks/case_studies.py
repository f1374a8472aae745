"""The case studies of "Machine Unlearning of Features and Labels", through unlearnd's HTTP API
(a real ``unlearnd run`` in embedded mode on a temporary data folder).

    .venv/bin/python benchmarks/case_studies.py [--only secret|poison|features] [--quick]

1. secret   — a character LSTM on a corpus (../shared/data/alice.txt when present, else a
              generated one) with a canary sentence inserted several times; ``rectify_text``
              replaces the number by "not here". Exposure, completions, training accuracy and
              time before/after, against retraining.
2. poison   — a CNN on Fashion-MNIST with 15% of the labels flipped, repaired by
              ``correct_labels`` with first order, second order and retraining.
3. features — a certified bag-of-words logistic regression whose name tokens are removed with
              ``remove_features``: residuals, σ, budget, accuracy, against retraining.

Prints a table per case and writes benchmarks/results/case_studies.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from svc import npz_bytes, start_service, stop_service, wait_job  # noqa: E402

SECRET = "0123456789"
CANARY = f"'My telephone number is {SECRET}', said Alice."
ALICE = ROOT.parent / "shared" / "data" / "alice.txt"


class _Backend:
    def __init__(self, d: Path) -> None:
        self.database_url = f"sqlite:///{d / 'unlearnd.db'}"
        self.broker_url = f"sqla+sqlite:///{d / 'broker.db'}"
        self.queue = "gpu"


def submit(client, body: dict, key: str) -> dict:  # type: ignore[no-untyped-def]
    r = client.post("/v1/requests", headers={"Idempotency-Key": key}, json=body)
    assert r.status_code == 202, r.text
    t = time.perf_counter()
    job = wait_job(client, r.json()["job_id"], timeout=7200)
    assert job["status"] == "succeeded", job
    job["latency_s"] = time.perf_counter() - t
    return job


def train_model(client, name: str, dataset: bytes, kind: str, body: dict) -> dict:  # type: ignore[no-untyped-def]
    r = client.post(
        "/v1/datasets", files={"file": ("d", dataset)}, data={"name": name, "kind": kind}
    )
    assert r.status_code == 201, r.text
    r = client.post("/v1/models", json={"name": name, "dataset_id": r.json()["id"], **body})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=7200)
    assert job["status"] == "succeeded", job
    return job


def corpus(quick: bool) -> tuple[str, str]:
    if ALICE.exists():
        text = ALICE.read_text(encoding="utf-8")
        start = text.find("CHAPTER I")
        text = text[start : start + (12_000 if quick else 40_000)]
        source = f"alice.txt ({len(text)} characters from chapter I)"
    else:
        rng = np.random.default_rng(0)
        names, things = ["Alice", "the Rabbit", "the Queen", "the Hatter"], ["tea", "a key"]
        text = "".join(
            f"{names[rng.integers(4)]} saw {things[rng.integers(2)]}. " for _ in range(800)
        )
        source = "generated"
    parts = text.split(". ")
    step = max(1, len(parts) // 10)
    for i in range(0, len(parts), step):
        parts[i] = parts[i] + ". " + CANARY
    return ". ".join(parts), source


def case_secret(client, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    text, source = corpus(quick)
    arch = {"kind": "char_lstm", "hidden": 128, "layers": 1, "embedding": 32, "window": 32}
    training = {"epochs": 6 if quick else 12, "lr": 0.005, "batch_size": 128, "seed": 0}
    tjob = train_model(
        client, "secret", text.encode(), "text", {"architecture": arch, "training": training}
    )
    job = submit(
        client,
        {
            "model": "secret",
            "kind": "rectify_text",
            "find": SECRET,
            "replace": "not here",
            "legal_basis": "GDPR Art. 16",
        },
        "secret-1",
    )
    m = job["result"]["metrics"]
    before, after = m["efficacy_before"], m["efficacy_after"]
    train_s = tjob["result"]["metrics"]["wall_time_s"]
    return {
        "case": "memorised secret",
        "corpus": source,
        "method": job["result"]["method"],
        "tiers": [(a["method"], round(a["wall_time_s"], 2), a["rejected"]) for a in m["attempts"]],
        "job_latency_s": job["latency_s"],
        "exposure_before_bits": before["exposure"]["exposure_bits"],
        "exposure_after_bits": after["exposure"]["exposure_bits"],
        "completion_before": before["completion"],
        "completion_after": after["completion"],
        "train_accuracy_before": m["fidelity_before"]["train"]["accuracy"],
        "train_accuracy_after": m["fidelity_after"]["train"]["accuracy"],
        "unlearn_s": m["wall_time_s"],
        "training_s": train_s,
        "speedup_vs_training": train_s / m["wall_time_s"],
    }


def case_poison(client, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    from _data import load_fashion_mnist

    X, y, Xte, yte = load_fashion_mnist()
    n = 4000 if quick else 12000
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))[:n]
    X, y = X[idx].astype(np.float32), y[idx]
    flip = rng.choice(n, int(0.15 * n), replace=False)
    yp = y.copy()
    yp[flip] = (y[flip] + 1) % 10  # systematic flips: each class into the next
    ids = np.array([f"img-{i}" for i in range(n)])
    test = {"X_test": Xte[:2000].astype(np.float32), "y_test": yte[:2000]}
    body = {
        "architecture": {"kind": "cnn", "channels": [8, 16], "input_shape": [1, 28, 28]},
        "training": {"epochs": 3, "lr": 0.002, "batch_size": 64, "seed": 0, "l2": 1.0},
    }
    out: dict = {"case": "poisoned labels", "n_train": n, "n_flipped": len(flip)}
    clean = train_model(
        client, "clean", npz_bytes(X=X, y=y, record_ids=ids, **test), "tabular", body
    )
    out["acc_clean"] = clean["result"]["metrics"]["held_out"]["accuracy"]
    corrections = [{"record_id": ids[i], "label": int(y[i])} for i in flip]
    for method in ("first_order", "second_order", "retrain"):
        name = f"poison-{method.replace('_', '-')}"
        t = train_model(client, name, npz_bytes(X=X, y=yp, record_ids=ids, **test), "tabular", body)
        out["acc_poisoned"] = t["result"]["metrics"]["held_out"]["accuracy"]
        out["train_s"] = t["result"]["metrics"]["wall_time_s"]
        job = submit(
            client,
            {"model": name, "kind": "correct_labels", "method": method, "corrections": corrections},
            name,
        )
        m = job["result"]["metrics"]
        out[f"acc_{method}"] = m["fidelity_after"]["held_out"]["accuracy"]
        out[f"time_{method}_s"] = m["wall_time_s"]
        out[f"job_latency_{method}_s"] = job["latency_s"]
    lost = out["acc_clean"] - out["acc_poisoned"]
    for method in ("first_order", "second_order", "retrain"):
        out[f"restored_{method}"] = (out[f"acc_{method}"] - out["acc_poisoned"]) / lost
        out[f"speedup_{method}"] = out["time_retrain_s"] / out[f"time_{method}_s"]
    return out


def bow_corpus(quick: bool, name_share: float) -> tuple[bytes, list[str], int]:
    """Bag-of-words documents (npz bytes), the name tokens, and the number of documents; names
    appear in ``name_share`` of the documents and correlate with the label there."""
    rng = np.random.default_rng(0)
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    good = ["great", "love", "excellent", "happy", "fine", "good"]
    bad = ["awful", "hate", "terrible", "sad", "poor", "bad"]
    filler = ["the", "a", "service", "order", "was", "and", "it", "product"]
    vocab = names + good + bad + filler
    n = 2000 if quick else 6000
    X = np.zeros((n, len(vocab)))
    y = rng.integers(0, 2, n)
    for i in range(n):
        words = list(rng.choice(filler, 5)) + list(rng.choice(good if y[i] else bad, 2))
        if rng.random() < name_share:  # personal names correlate with the label there
            words.append(names[rng.integers(4) + 4 * int(y[i])])
        for w in words:
            X[i, vocab.index(w)] += 1
    ids = np.array([f"doc-{i}" for i in range(n)])
    y = np.where(rng.random(n) < 0.1, 1 - y, y)  # 10% label noise: not separable
    data = npz_bytes(X=X, y=y, record_ids=ids, feature_names=np.array(vocab))
    return data, names, n


def case_features(client, quick: bool) -> dict:  # type: ignore[no-untyped-def]
    common, names, n = bow_corpus(quick, 0.3)
    rare, _, _ = bow_corpus(quick, 0.03)
    out: dict = {
        "case": "sensitive features (certified)",
        "n_docs": n,
        "n_removed_features": len(names),
    }
    for label, data, cert_in in (
        ("auto-sigma", common, {"capacity": 20}),
        ("sized-sigma", common, None),
        ("rare-names", rare, {"capacity": 20}),
    ):
        if cert_in is None:  # σ sized so that this very request fits one budget
            cert_in = {"sigma": 1.2 * out["auto-sigma"]["sigma_needed"]}
        body = {
            "architecture": {"kind": "logistic_regression"},
            "training": {"l2": 1.0},
            "certification": {"epsilon": 1.0, "delta": 1e-5, **cert_in},
        }
        name = f"bow-{label}"
        t = train_model(client, name, data, "tabular", body)
        job = submit(client, {"model": name, "kind": "remove_features", "features": names}, name)
        m, cert = job["result"]["metrics"], job["result"]["certificate"]
        v = client.post(f"/v1/models/{name}/versions/2/verify")
        ver = wait_job(client, v.json()["job_id"], timeout=3600)["result"]["metrics"]
        charge = (m.get("certification_charge") or {}).get("charge")
        out[label] = {
            "n_affected": m["n_affected"],
            "method": job["result"]["method"],
            "sigma": cert["sigma"],
            "budget": cert["budget"],
            "budget_used": cert["budget_used"],
            "certified": cert["certified"],
            "lineage": cert["lineage"],
            "exact_residual": m["gradient_residual"],
            "charge": charge,
            "sigma_needed": None if charge is None else cert["c"] * charge / cert["epsilon"],
            "train_accuracy_before": t["result"]["metrics"]["train_accuracy"],
            "train_accuracy_after": m["fidelity_after"]["train"]["accuracy"],
            "train_accuracy_retrained": ver["accuracy_reference"],
            "relative_distance_to_retrained": ver["relative_parameter_distance"],
            "unlearn_s": m["wall_time_s"],
            "retrain_s": ver["retrain_wall_time_s"],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=("secret", "poison", "features"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cases = {"features": case_features, "poison": case_poison, "secret": case_secret}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        svc = start_service(
            _Backend(Path(tmp)), Path(tmp) / "data", extra_env={"UNLEARND_JOB_LEASE_S": "600"}
        )
        try:
            client = svc.client()
            client.timeout = 600
            for name, fn in cases.items():
                if args.only and name != args.only:
                    continue
                res = fn(client, args.quick)
                results.append(res)
                print(f"\n== {res['case']}")
                for k, v in res.items():
                    if k == "case":
                        continue
                    for kk, vv in v.items() if isinstance(v, dict) else [(k, v)]:
                        label = f"{k}.{kk}" if isinstance(v, dict) else kk
                        text = f"{vv:.4g}" if isinstance(vv, float) else str(vv)
                        print(f"  {label:44} {text}")
        finally:
            stop_service(svc)
    out = ROOT / "benchmarks" / "results" / "case_studies.json"
    merged = {r["case"]: r for r in (json.loads(out.read_text()) if out.exists() else [])}
    merged.update({r["case"]: r for r in results})  # --only refreshes one case, keeps the rest
    out.write_text(json.dumps(list(merged.values()), indent=2))
    print(f"\nwrote {out}")
    plot(list(merged.values()), out.with_suffix(".png"))


def plot(results: list[dict], path: Path) -> None:
    """One panel per case: exposure (secret), accuracies (poison, features)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    by = {r["case"]: r for r in results}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    s = by.get("memorised secret")
    if s:
        ax = axes[0]
        ax.bar(["before", "after"], [s["exposure_before_bits"], s["exposure_after_bits"]])
        ax.axhline(2.0, color="k", ls="--", lw=0.8, label="bar: 2 bits")
        ax.set_ylabel("exposure (bits)")
        ax.set_title(f"secret: {s['method']}, {s['unlearn_s']:.0f} s vs {s['training_s']:.0f} s")
        ax.legend()
    p = by.get("poisoned labels")
    if p:
        ax = axes[1]
        names = ["clean", "poisoned", "first_order", "second_order", "retrain"]
        ax.bar(names, [p[f"acc_{n}"] for n in names], color="tab:green")
        ax.set_ylim(min(p[f"acc_{n}"] for n in names) - 0.05, 1.0)
        ax.set_ylabel("held-out accuracy")
        ax.tick_params(axis="x", rotation=30)
        ax.set_title("poisoned labels (CNN)")
    f = by.get("sensitive features (certified)")
    if f:
        ax = axes[2]
        labels, vals = [], []
        for k in ("auto-sigma", "sized-sigma", "rare-names"):
            if k in f:
                labels += [f"{k[:4]} σ\n{w}" for w in ("before", "after", "retrain")]
                vals += [
                    f[k]["train_accuracy_before"],
                    f[k]["train_accuracy_after"],
                    f[k]["train_accuracy_retrained"],
                ]
        ax.bar(labels, vals, color="tab:purple")
        ax.set_ylim(min(vals) - 0.05, 1.0)
        ax.set_ylabel("training accuracy")
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title("sensitive features (certified)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
