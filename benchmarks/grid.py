"""Model × request kind × method on the engine, every row against retraining in the same run.

Models of the catalogue on a Fashion-MNIST subset (N_TRAIN rows, pixels/255; Debian package
``dataset-fashion-mnist``): binary logistic regression (tops vs rest, 785 parameters, λ = 10),
10-class logistic regression and one-vs-rest smooth-hinge SVM (7,850 parameters, λ = 100), an
MLP [64] and a CNN [8, 16] (λ = 1, Adam, fixed epochs); and a character LSTM on a text corpus
with an inserted secret.

Request kinds, built by the service's own change-set code (``workers.changes``), 1% of the
records each: ``delete_records``; ``correct_labels`` (label → next class); ``correct_features``
(20 pixels of each record rewritten as 1 − x); ``remove_features`` (8 border pixels, zeroed in
every record where one is non-zero); ``rectify_text`` for the LSTM (the secret replaced).

Methods, with the options the service uses (``workers.strategy.update_options``) and, for the
convex models, the version cache the worker builds after each commit (Cholesky factor up to
5,000 parameters, block preconditioner beyond): first order; second order ``exact`` (cached
Cholesky + Woodbury), ``cg`` and ``lissa`` for convex models; the damped and the Newton variant
(last layer, exact head features) for deep ones; retraining.

Per row: wall time of the update; retraining to the SAME gradient tolerance the update reached
(convex: ‖∇L(θ; D')‖ ≤ the row's residual; deep: the same seed and epochs) and the speed-up over
it; distance to a model retrained to 1e-8·n (convex; row "retrain (1e-8·n)") relative to that of
no update (‖θ_u − θ_r‖/‖θ* − θ_r‖:
1 = no better than no update; deep retraining is stochastic, so this is only indicative there);
test-accuracy difference to the retrained model; gradient residual; peak resident memory above
the level before the call (sampled every 2 ms from /proc/self/statm, MiB).

    .venv/bin/python benchmarks/grid.py [--quick]   # table; results/grid.{json,png}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import load_fashion_mnist  # noqa: E402

from app.datasets import TabularData, TextCorpus  # noqa: E402
from unlearning import (  # noqa: E402
    TrainedModel,
    TrainingOptions,
    UnlearnOptions,
    build_block_factorization,
    build_factorization,
    evaluate,
    train,
    unlearn,
)
from unlearning.architectures import flatten  # noqa: E402
from unlearning.objective import Objective  # noqa: E402
from workers.changes import Change, tabular_change, text_change  # noqa: E402
from workers.strategy import bad_evidence, update_options  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
EXACT_MAX = 5000
KINDS = ("delete_records", "correct_labels", "correct_features", "remove_features")


class PeakRSS:
    """Peak resident set size above the level at entry (MiB), sampled every 2 ms."""

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.PAGE

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def theta(model: TrainedModel) -> np.ndarray:
    return flatten(model.params, Objective.for_model(model).shapes).double().numpy()


def tabular(X: np.ndarray, y: np.ndarray) -> TabularData:
    n, d = X.shape
    return TabularData(
        X,
        y,
        np.array([f"r{i}" for i in range(n)]),
        np.array([f"s{i // 3}" for i in range(n)]),
        np.array([f"px{j}" for j in range(d)]),
    )


def change_of(kind: str, data: TabularData, k: int, rng: np.random.Generator) -> Change:
    """The service's change set of a ``kind`` request touching 1% of the records."""
    n = data.n_records
    rows = rng.choice(n, max(1, n // 100), replace=False)
    ids = data.record_ids[rows].tolist()
    if kind == "delete_records":
        payload: dict[str, Any] = {"record_ids": ids}
    elif kind == "correct_labels":
        new = (data.y[rows] + 1) % k
        payload = {
            "corrections": [
                {"record_id": i, "label": int(c)} for i, c in zip(ids, new, strict=True)
            ]
        }
    elif kind == "correct_features":
        cols = rng.choice(data.n_features, 20, replace=False)
        names = data.feature_names[cols].tolist()
        payload = {
            "corrections": [
                {
                    "record_id": i,
                    "features": {
                        f: float(1.0 - data.X[r, c]) for f, c in zip(names, cols, strict=True)
                    },
                }
                for i, r in zip(ids, rows, strict=True)
            ]
        }
    else:
        # 8 pixels each non-zero in 0.5–3% of the records (the image border)
        share = (data.X != 0).mean(0)
        cand = np.flatnonzero((share > 0.005) & (share < 0.03))
        cols = rng.choice(cand, min(8, cand.size), replace=False)
        payload = {"features": data.feature_names[cols].tolist()}
    return tabular_change(kind, payload, data)


def run(model: TrainedModel, ch: Change, opts: dict, fact: Any = None) -> tuple[Any, float, float]:
    """(result, wall s, peak MiB) of one update."""
    with PeakRSS() as mem:
        t = time.perf_counter()
        res = unlearn(
            model,
            ch.X_after,
            ch.y_after,
            ch.Z_X,
            ch.Z_y,
            ch.Zt_X,
            ch.Zt_y,
            UnlearnOptions(**opts),
            factorization=fact,
        )
        wall = time.perf_counter() - t
    return res, wall, mem.mib


def rejects(before: TrainedModel, res: Any, ch: Change) -> str | None:
    """The service's evidence check of a non-convex update (gradient residual, and the loss on
    D' before and after), as ``workers.flows`` runs it; None when it would accept the update."""
    f0 = evaluate(before, ch.X_after, ch.y_after)["loss"]
    f1 = evaluate(res.model, ch.X_after, ch.y_after)["loss"]
    return bad_evidence(res.model, res.metrics, f0, f1)


@dataclass
class Cell:
    """What every row of one (model, request kind) shares, the reference retraining included."""

    model: str
    kind: str
    n_affected: int
    n_params: int
    train_s: float
    ref_s: float
    th_ref: np.ndarray
    d0: float
    acc_ref: float

    @classmethod
    def of(
        cls,
        name: str,
        kind: str,
        ch: Change,
        before: TrainedModel,
        ref: TrainedModel,
        ref_s: float,
        train_s: float,
        acc_ref: float,
    ) -> Cell:
        th_ref = theta(ref)
        return cls(
            name,
            kind,
            ch.n_affected,
            int(theta(before).size),
            train_s,
            ref_s,
            th_ref,
            float(np.linalg.norm(theta(before) - th_ref)),
            acc_ref,
        )

    def update(
        self,
        method: str,
        res: Any,
        wall: float,
        mib: float,
        retrain_s: float,
        acc: float,
        **extra: Any,
    ) -> dict:
        """The row of one update (``acc``: its accuracy on the cell's evaluation data)."""
        m = res.metrics
        return {
            **self._common(method, wall, retrain_s),
            "speedup": retrain_s / wall,
            "rel_distance": float(np.linalg.norm(theta(res.model) - self.th_ref)) / self.d0,
            "acc_diff_pp": 100 * (acc - self.acc_ref),
            "gradient_residual": m["gradient_residual"],
            "gradient_residual_before": m["gradient_residual_before"],
            "gradient_residual_scope": m.get("gradient_residual_scope"),
            "iterations": m.get("iterations"),
            "peak_mib": mib,
            **extra,
        }

    def retrain(self, method: str, **extra: Any) -> dict:
        """The row of the reference retraining itself."""
        return {
            **self._common(method, self.ref_s, self.ref_s),
            "speedup": 1.0,
            "rel_distance": 0.0,
            "acc_diff_pp": 0.0,
            "gradient_residual": None,
            "peak_mib": None,
            **extra,
        }

    def _common(self, method: str, wall: float, retrain_s: float) -> dict:
        return {
            "model": self.model,
            "kind": self.kind,
            "method": method,
            "n_affected": self.n_affected,
            "n_params": self.n_params,
            "train_s": self.train_s,
            "wall_s": wall,
            "retrain_same_tol_s": retrain_s,
        }


def convex_rows(name, arch, X, y, Xte, yte, k, lam, rng) -> list[dict]:
    t = time.perf_counter()
    model, _ = train(arch, X, y, k, TrainingOptions(l2=lam, grad_tol=1e-10, max_iter=20000))
    train_s = time.perf_counter() - t
    p = theta(model).size
    t = time.perf_counter()
    fact = (
        build_factorization(model, X, y, max_params=EXACT_MAX)
        if p <= EXACT_MAX
        else build_block_factorization(model, X, y)
    )
    cache_s = time.perf_counter() - t
    data = tabular(X, y)
    out = []
    for kind in KINDS:
        ch = change_of(kind, data, k, rng)
        na = len(ch.y_after)
        t = time.perf_counter()
        ref, _ = train(
            arch, ch.X_after, ch.y_after, k, TrainingOptions(l2=lam, grad_tol=1e-8, max_iter=20000)
        )
        ref_s = time.perf_counter() - t
        cell = Cell.of(
            name, kind, ch, model, ref, ref_s, train_s, evaluate(ref, Xte, yte)["accuracy"]
        )
        methods: list[tuple[str, dict]] = [("first_order", {})]
        if p <= EXACT_MAX:
            methods.append(("second_order exact", {"solver": "exact"}))
        methods += [
            ("second_order cg", {"solver": "cg"}),
            ("second_order lissa", {"solver": "lissa"}),
        ]
        for label, extra in methods:
            method = label.split()[0]
            opts = update_options(method, True, extra, EXACT_MAX, "cpu")
            res, wall, mib = run(model, ch, opts, fact if method == "second_order" else None)
            r = res.metrics["gradient_residual"]
            t = time.perf_counter()
            train(
                arch,
                ch.X_after,
                ch.y_after,
                k,
                TrainingOptions(l2=lam, grad_tol=r / na, max_iter=20000),
            )
            retrain_s = time.perf_counter() - t
            acc = evaluate(res.model, Xte, yte)["accuracy"]
            out.append(
                cell.update(
                    label,
                    res,
                    wall,
                    mib,
                    retrain_s,
                    acc,
                    service_rejects=bad_evidence(res.model, res.metrics),
                    version_cache_s=cache_s if method == "second_order" else None,
                )
            )
        out.append(cell.retrain("retrain (1e-8·n)"))
        print_rows(out[-len(methods) - 1 :])
    return out


def deep_rows(name, arch, X, y, Xte, yte, k, epochs, rng) -> list[dict]:
    opts_t = TrainingOptions(l2=1.0, seed=0, epochs=epochs, lr=2e-3, batch_size=64)
    t = time.perf_counter()
    model, _ = train(arch, X, y, k, opts_t)
    train_s = time.perf_counter() - t
    arch = model.architecture  # with the CNN's input_shape: retraining takes flattened rows
    data = tabular(X.reshape(len(y), -1), y)
    out = []
    for kind in KINDS:
        ch = change_of(kind, data, k, rng)
        t = time.perf_counter()
        ref, _ = train(arch, ch.X_after, ch.y_after, k, opts_t)
        ref_s = time.perf_counter() - t
        cell = Cell.of(
            name, kind, ch, model, ref, ref_s, train_s, evaluate(ref, Xte, yte)["accuracy"]
        )
        methods = [
            ("first_order", None),
            ("second_order damped", "damped"),
            ("second_order newton", "newton"),
        ]
        rows = []
        for label, variant in methods:
            opts = update_options(label.split()[0], False, {}, EXACT_MAX, "cpu", variant)
            res, wall, mib = run(model, ch, opts)
            acc = evaluate(res.model, Xte, yte)["accuracy"]
            rows.append(
                cell.update(
                    label, res, wall, mib, ref_s, acc, service_rejects=rejects(model, res, ch)
                )
            )
        rows.append(cell.retrain("retrain (same epochs)"))
        print_rows(rows)
        out += rows
    return out


def lstm_rows(quick: bool) -> list[dict]:
    from unlearning.exposure import exposure
    from unlearning.text import complete, train_text

    sys.path.insert(0, str(ROOT / "tests" / "numerics"))
    from test_deep_unlearning import PREFIX, SECRET, secret_corpus

    corpus = secret_corpus()
    arch = {"kind": "char_lstm", "hidden": 64, "layers": 1, "embedding": 16, "window": 12}
    opts_t = TrainingOptions(l2=1.0, seed=0, epochs=8 if quick else 15, lr=1e-2, batch_size=64)
    t = time.perf_counter()
    model, _ = train_text(arch, corpus, opts_t)
    train_s = time.perf_counter() - t
    ch = text_change({"find": SECRET, "replace": "not here"}, TextCorpus(corpus), model, 1000)
    t = time.perf_counter()
    # retraining keeps the model's vocabulary (as the service's retrain tier does)
    ref, _ = train_text(model.architecture, corpus.replace(SECRET, "not here"), opts_t)
    ref_s = time.perf_counter() - t
    acc_ref = evaluate(ref, ch.X_after, ch.y_after)["accuracy"]
    cell = Cell.of("char_lstm", "rectify_text", ch, model, ref, ref_s, train_s, acc_ref)

    def secret(m: TrainedModel) -> dict:
        return {
            "exposure_bits": exposure(m, PREFIX, SECRET, 1000)["exposure_bits"],
            "completion": complete(m, PREFIX, len(SECRET)),
        }

    rows = []
    cases = [
        ("first_order", None),
        ("second_order damped", "damped"),
        ("second_order newton", "newton"),
    ]
    for label, variant in cases:
        opts = update_options(label.split()[0], False, {}, EXACT_MAX, "cpu", variant)
        res, wall, mib = run(model, ch, opts)
        acc = evaluate(res.model, ch.X_after, ch.y_after)["accuracy"]
        probe = secret(res.model)
        bits = probe["exposure_bits"]
        verdict = rejects(model, res, ch) or (
            f"exposure {bits:.1f} bits > 2" if bits > 2.0 else None
        )
        rows.append(
            cell.update(label, res, wall, mib, ref_s, acc, service_rejects=verdict, **probe)
        )
    rows.append(cell.retrain("retrain (same epochs)", **secret(ref)))
    print_rows(rows)
    return rows


HEADER = (
    f"{'model':<16}{'kind':<18}{'method':<22}{'|Z|':>5}{'wall s':>9}{'retrain s':>10}"
    f"{'speed-up':>10}{'rel dist':>10}{'Δacc pp':>9}{'residual':>10}{'peak MiB':>9}"
)


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        res = "" if r.get("gradient_residual") is None else f"{r['gradient_residual']:.2e}"
        mib = "" if r.get("peak_mib") is None else f"{r['peak_mib']:.0f}"
        extra = f"  exposure {r['exposure_bits']:.1f} bits" if "exposure_bits" in r else ""
        if r.get("service_rejects"):
            extra += f"  [service rejects: {r['service_rejects']}]"
        print(
            f"{r['model']:<16}{r['kind']:<18}{r['method']:<22}{r['n_affected']:>5}"
            f"{r['wall_s']:>9.3f}{r['retrain_same_tol_s']:>10.2f}{r['speedup']:>9.1f}×"
            f"{r['rel_distance']:>10.2e}{r['acc_diff_pp']:>9.2f}{res:>10}{mib:>9}{extra}",
            flush=True,
        )


def plot(rows: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    groups = list(dict.fromkeys((r["model"], r["kind"]) for r in rows))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if not m.startswith("retrain")]
    fig, axes = plt.subplots(2, 1, figsize=(14, 7), sharex=True)
    w = 0.8 / len(methods)
    xs = np.arange(len(groups))
    for i, m in enumerate(methods):
        sp, rd = [], []
        for g in groups:
            r = next((r for r in rows if (r["model"], r["kind"]) == g and r["method"] == m), None)
            sp.append(r["speedup"] if r else np.nan)
            rd.append(max(r["rel_distance"], 1e-6) if r else np.nan)
        axes[0].bar(xs + (i - len(methods) / 2 + 0.5) * w, sp, w, label=m)
        axes[1].bar(xs + (i - len(methods) / 2 + 0.5) * w, rd, w, label=m)
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("speed-up over retraining\n(same tolerance)")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("‖θ_u − θ_r‖ / ‖θ* − θ_r‖\n(1 = no update)")
    axes[1].set_xticks(xs, [f"{m}\n{k}" for m, k in groups], rotation=60, ha="right", fontsize=7)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "grid.png", dpi=110)
    print(f"wrote {OUT / 'grid.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,500 rows, fewer epochs")
    quick = parser.parse_args().quick
    n = 1500 if quick else 6000
    X, y, Xte, yte = load_fashion_mnist()
    rng = np.random.default_rng(0)
    tr = rng.choice(len(y), n, replace=False)
    te = rng.choice(len(yte), 2000, replace=False)
    X, y, Xte, yte = X[tr], y[tr], Xte[te], yte[te]
    tops, tops_te = (
        np.isin(y, [0, 2, 4, 6]).astype(np.int64),
        np.isin(yte, [0, 2, 4, 6]).astype(np.int64),
    )
    print(f"Fashion-MNIST subset: {n} training rows, 2,000 test rows; 2 CPU threads")
    print(HEADER)
    rows: list[dict] = []
    lr = {"kind": "logistic_regression"}
    rows += convex_rows("logreg binary", lr, X, tops, Xte, tops_te, 2, 10.0, rng)
    rows += convex_rows("logreg 10-class", lr, X, y, Xte, yte, 10, 100.0, rng)
    svm = {"kind": "linear_svm", "smoothing": 0.5}
    rows += convex_rows("svm 10-class", svm, X, y, Xte, yte, 10, 100.0, rng)
    epochs = 2 if quick else 5
    rows += deep_rows("mlp [64]", {"kind": "mlp", "hidden": [64]}, X, y, Xte, yte, 10, epochs, rng)
    cnn = {"kind": "cnn", "channels": [8, 16], "convs_per_block": 1}
    rows += deep_rows("cnn [8,16]", cnn, X.reshape(-1, 1, 28, 28), y, Xte, yte, 10, epochs, rng)
    rows += lstm_rows(quick)
    OUT.mkdir(exist_ok=True)
    (OUT / f"grid{'_quick' if quick else ''}.json").write_text(json.dumps(rows, indent=1))
    if not quick:
        plot(rows)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(2)
    main()
