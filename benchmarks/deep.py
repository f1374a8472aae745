"""Case study "poisoned labels": a small VGG-style CNN on a Fashion-MNIST subset.

15 % of the training labels (drawn from classes 0–2) are shifted to the next class; the poisoned
model is repaired by ``correct_labels`` (Z = the poisoned points, Z̃ = the same images with the
true labels) with the first-order update (τ = 1/λ̂_max, λ̂_max from 20 power iterations on a
2,000-row subsample, included in its time) and the second-order update as the service runs it
for deep models (the last layer, exact on the head features of all rows, CG, the first
variant: damped by 1e-3·λ_max), and compared with retraining on the corrected labels (same seed
and epochs).
Subset (stated in the output): N_TRAIN training and N_TEST test images, EPOCHS epochs, so that
it runs in a few minutes on 2 CPU cores.

    .venv/bin/python benchmarks/deep.py     # prints a table, writes results/deep.json and .png
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import load_fashion_mnist  # noqa: E402

from unlearning import TrainingOptions, UnlearnOptions, evaluate, train, unlearn  # noqa: E402
from unlearning.architectures import flatten  # noqa: E402
from unlearning.hessian import power_iteration  # noqa: E402
from unlearning.objective import Objective  # noqa: E402

N_TRAIN, N_TEST = 10_000, 2_000
ARCH = {"kind": "cnn", "channels": [8, 16]}


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    EPOCHS = parser.parse_args().epochs
    torch.set_num_threads(2)
    Xtr, ytr, Xte, yte = load_fashion_mnist()
    rng = np.random.default_rng(0)
    tr = rng.choice(len(ytr), N_TRAIN, replace=False)
    te = rng.choice(len(yte), N_TEST, replace=False)
    Xtr, ytr = Xtr[tr].reshape(-1, 1, 28, 28), ytr[tr]
    Xte, yte = Xte[te], yte[te]
    idx = rng.choice(np.where(ytr < 3)[0], int(0.15 * N_TRAIN), replace=False)
    yp = ytr.copy()
    yp[idx] = (ytr[idx] + 1) % 10
    opts = TrainingOptions(l2=1.0, seed=0, epochs=EPOCHS, lr=2e-3, batch_size=64)
    poisoned, _ = train(ARCH, Xtr, yp, 10, opts)
    Xf = Xtr.reshape(N_TRAIN, -1)
    # Retraining on the corrected labels with the same seed *is* the clean model.
    t0 = time.perf_counter()
    retrained, mc = train(ARCH, Xtr, ytr, 10, opts)
    t_retrain = time.perf_counter() - t0
    clean = retrained
    acc = {
        "clean": evaluate(clean, Xte, yte)["accuracy"],
        "poisoned": evaluate(poisoned, Xte, yte)["accuracy"],
        "retrained": evaluate(retrained, Xte, yte)["accuracy"],
    }
    times = {"retrained": t_retrain}
    Z = (Xf[idx], yp[idx], Xf[idx], ytr[idx])
    # λ̂_max of the SUM-objective Hessian from 20 power iterations on a 2,000-row subsample
    # scaled by n/m (the full 200-iteration estimate on all rows costs more than retraining).
    t0 = time.perf_counter()
    obj = Objective.for_model(poisoned)
    theta = flatten(poisoned.params, obj.shapes)
    sub = rng.choice(N_TRAIN, 2000, replace=False)
    Xs = torch.as_tensor(Xf[sub], dtype=torch.float32)
    ys = torch.as_tensor(ytr[sub])
    scale = N_TRAIN / len(sub)
    lam = power_iteration(
        lambda v: scale * obj.hvp(theta, Xs, ys, v),
        obj.n_params,
        dtype=torch.float32,
        max_iter=20,
        rtol=1e-3,
    )
    t_lam = time.perf_counter() - t0
    r1 = unlearn(poisoned, Xf, ytr, *Z, UnlearnOptions(method="first_order", tau=1.0 / lam))
    acc["first_order"] = evaluate(r1.model, Xte, yte)["accuracy"]
    times["first_order"] = r1.metrics["wall_time_s"] + t_lam
    # The service's second order for deep models (workers/strategy.py): the last layer, solved
    # exactly as the linear problem it is on the head features of all rows (one forward pass),
    # CG with the block preconditioner, the service's first variant: damping 1e-3·λ_max.
    so = UnlearnOptions(
        method="second_order",
        solver="cg",
        damping_relative=1e-3,
        cg_tol=1e-4,
        cg_max_iter=100,
        last_k_layers=1,
    )
    r2 = unlearn(poisoned, Xf, ytr, *Z, so)
    acc["second_order"] = evaluate(r2.model, Xte, yte)["accuracy"]
    times["second_order"] = r2.metrics["wall_time_s"]
    lost = acc["clean"] - acc["poisoned"]
    rows = []
    for name in ("clean", "poisoned", "first_order", "second_order", "retrained"):
        share = (acc[name] - acc["poisoned"]) / lost if lost > 0 else float("nan")
        t = times.get(name)
        rows.append(
            {
                "model": name,
                "test_accuracy": acc[name],
                "restored_share": share,
                "time_s": t,
                "speedup_vs_retraining": (t_retrain / t) if t else None,
            }
        )
    print(
        f"CNN {ARCH['channels']} on Fashion-MNIST subset: {N_TRAIN} train / {N_TEST} test "
        f"images, {EPOCHS} epochs, {len(idx)} labels poisoned (15 %), 2 CPU threads"
    )
    print(f"{'model':<14}{'test acc':>10}{'restored':>10}{'time s':>10}{'speed-up':>10}")
    for r in rows:
        t = "" if r["time_s"] is None else f"{r['time_s']:.2f}"
        s = "" if r["speedup_vs_retraining"] is None else f"{r['speedup_vs_retraining']:.1f}×"
        print(
            f"{r['model']:<14}{r['test_accuracy']:>10.4f}{r['restored_share']:>10.2f}{t:>10}{s:>10}"
        )
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "setup": {
            "architecture": clean.architecture,
            "n_train": N_TRAIN,
            "n_test": N_TEST,
            "epochs": EPOCHS,
            "n_poisoned": len(idx),
            "training": opts.to_dict(),
            "second_order": so.to_dict(),
            "train_time_s": mc["wall_time_s"],
            "lambda_max_estimate": lam,
            "lambda_max_time_s": t_lam,
        },
        "rows": rows,
        "first_order_metrics": {k: v for k, v in r1.metrics.items() if _jsonable(v)},
        "second_order_metrics": {k: v for k, v in r2.metrics.items() if _jsonable(v)},
    }
    (out / "deep.json").write_text(json.dumps(result, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
        names = [r["model"] for r in rows]
        ax[0].bar(names, [r["test_accuracy"] for r in rows], color="tab:blue")
        ax[0].set_ylim(min(acc.values()) - 0.05, 1.0)
        ax[0].set_ylabel("test accuracy")
        ax[0].tick_params(axis="x", rotation=30)
        tn = ["first_order", "second_order", "retrained"]
        ax[1].bar(tn, [times[n] for n in tn], color="tab:orange")
        ax[1].set_yscale("log")
        ax[1].set_ylabel("wall time (s)")
        fig.suptitle("Poisoned labels, CNN on Fashion-MNIST subset")
        fig.tight_layout()
        fig.savefig(out / "deep.png", dpi=120)
    except ImportError:  # pragma: no cover
        pass


def _jsonable(v: object) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


if __name__ == "__main__":
    main()
