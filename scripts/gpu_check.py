"""Short device check (about two minutes on a GPU): train, unlearn and time on ``cuda`` when
present, on the CPU otherwise (same code, smaller default sizes there).

    .venv/bin/python scripts/gpu_check.py            # auto device
    .venv/bin/python scripts/gpu_check.py --device cpu --quick

1. binary logistic regression on Fashion-MNIST (synthetic data of the same shape when the
   Debian package dataset-fashion-mnist is absent): train, build the Hessian factorisation,
   delete 100 records with the cached second-order update, retrain to the same tolerance;
2. multinomial logistic regression (7,850 parameters): 100 deletions by preconditioned CG
   against retraining to the same gradient tolerance;
3. a small CNN with 15% poisoned labels: train clean and poisoned, repair with correct_labels
   (first and second order, CG on damped Hessian-vector products), report the share of the lost
   accuracy restored and the time against retraining.

Prints a table and writes benchmarks/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from unlearning import (  # noqa: E402
    TrainingOptions,
    UnlearnOptions,
    build_block_factorization,
    build_factorization,
    evaluate,
    train,
    unlearn,
)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fashion(n_train: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    try:
        from _data import load_fashion_mnist

        X, y, Xt, yt = load_fashion_mnist()
        source = "fashion-mnist"
    except (FileNotFoundError, OSError):
        rng = np.random.default_rng(seed)
        X, Xt = rng.random((60_000, 784)), rng.random((10_000, 784))
        w = rng.normal(size=(784, 10))
        y, yt = (X @ w).argmax(1), (Xt @ w).argmax(1)
        source = "synthetic (fashion-mnist not installed)"
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))[:n_train]
    return X[idx], y[idx], Xt, yt, source


def convex_case(device: str, n_train: int) -> dict:
    X, y, Xt, yt, source = fashion(n_train)
    y, yt = (y == 0).astype(np.int64), (yt == 0).astype(np.int64)  # "t-shirt/top vs not"
    opts = TrainingOptions(l2=10.0, device=device)
    t = time.perf_counter()
    model, _ = train({"kind": "logistic_regression"}, X, y, 2, opts)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    fact = build_factorization(model, X, y, device=device)
    sync(device)
    fact_s = time.perf_counter() - t
    rows = np.random.default_rng(1).choice(len(y), 100, replace=False)
    keep = np.setdiff1d(np.arange(len(y)), rows)
    t = time.perf_counter()
    res = unlearn(
        model,
        X[keep],
        y[keep],
        X[rows],
        y[rows],
        X[:0],
        y[:0],
        UnlearnOptions(method="second_order", device=device),
        factorization=fact,
    )
    sync(device)
    unlearn_s = time.perf_counter() - t
    t = time.perf_counter()
    retrained, _ = train({"kind": "logistic_regression"}, X[keep], y[keep], 2, opts)
    retrain_s = time.perf_counter() - t
    return {
        "case": f"logreg binary {source} n={len(y)}",
        "device": device,
        "train_s": train_s,
        "factorization_s": fact_s,
        "unlearn_s": unlearn_s,
        "solve_s": res.metrics.get("solve_time_s"),
        "retrain_s": retrain_s,
        "speedup": retrain_s / unlearn_s,
        "acc_unlearned": evaluate(res.model, Xt, yt)["accuracy"],
        "acc_retrained": evaluate(retrained, Xt, yt)["accuracy"],
        "gradient_residual": res.metrics["gradient_residual"],
    }


def multinomial_case(device: str, n_train: int) -> dict:
    """10-class logistic regression (7,850 parameters), 100 deletions, CG to 1e-4 with the
    version's cached block preconditioner (soft-max flat subspace), as benchmarks/convex.py,
    versus L-BFGS retraining to the same tolerance."""
    X, y, Xt, yt, source = fashion(n_train)
    opts = TrainingOptions(l2=100.0, grad_tol=1e-6, max_iter=20000, device=device)
    t = time.perf_counter()
    model, tm = train({"kind": "logistic_regression"}, X, y, 10, opts)
    train_s = time.perf_counter() - t
    rows = np.random.default_rng(1).choice(len(y), 100, replace=False)
    keep = np.setdiff1d(np.arange(len(y)), rows)
    t = time.perf_counter()
    cache = build_block_factorization(model, X, y, device=device)
    cache_s = time.perf_counter() - t
    o = UnlearnOptions(method="second_order", solver="cg", cg_tol=1e-4, cg_max_iter=500)
    o = dataclasses.replace(o, device=device)
    t = time.perf_counter()
    res = unlearn(model, X[keep], y[keep], X[rows], y[rows], X[:0], y[:0], o, factorization=cache)
    sync(device)
    unlearn_s = time.perf_counter() - t
    r = res.metrics["gradient_residual"]
    t = time.perf_counter()
    retrained, rm = train(
        {"kind": "logistic_regression"},
        X[keep],
        y[keep],
        10,
        TrainingOptions(l2=100.0, grad_tol=r / len(keep), max_iter=20000, device=device),
    )
    retrain_s = time.perf_counter() - t
    return {
        "case": f"logreg multinomial {source} n={len(y)}",
        "device": device,
        "train_s": train_s,
        "train_grad_norm": tm["grad_norm"],
        "preconditioner_cache_s": cache_s,
        "preconditioner_source": res.metrics.get("preconditioner_source"),
        "unlearn_s": unlearn_s,
        "solve_s": res.metrics.get("solve_time_s"),
        "cg_iterations": res.metrics.get("iterations"),
        "retrain_same_tol_s": retrain_s,
        "retrain_grad_norm": rm["grad_norm"],
        "speedup_wall": retrain_s / unlearn_s,
        "speedup_solve": retrain_s / res.metrics["solve_time_s"],
        "gradient_residual": r,
        "acc_unlearned": evaluate(res.model, Xt, yt)["accuracy"],
        "acc_retrained": evaluate(retrained, Xt, yt)["accuracy"],
    }


def cnn_case(device: str, n_train: int, epochs: int) -> dict:
    X, y, Xt, yt, source = fashion(n_train, seed=2)
    Xt, yt = Xt[:2000], yt[:2000]
    # the poisoning and training of benchmarks/deep.py: 15% of the labels, drawn from classes
    # 0–2, shifted to the next class
    rng = np.random.default_rng(3)
    flip = rng.choice(np.where(y < 3)[0], int(0.15 * len(y)), replace=False)
    y_poison = y.copy()
    y_poison[flip] = (y[flip] + 1) % 10
    arch = {"kind": "cnn", "channels": [8, 16], "input_shape": [1, 28, 28]}
    opts = TrainingOptions(l2=1.0, seed=0, epochs=epochs, lr=2e-3, batch_size=64, device=device)
    clean, _ = train(arch, X, y, 10, opts)
    t = time.perf_counter()
    poisoned, _ = train(arch, X, y_poison, 10, opts)
    train_s = time.perf_counter() - t
    out = {
        "case": f"cnn poisoned 15% {source} n={len(y)}",
        "device": device,
        "retrain_s": train_s,
        "acc_clean": evaluate(clean, Xt, yt)["accuracy"],
        "acc_poisoned": evaluate(poisoned, Xt, yt)["accuracy"],
    }
    lost = out["acc_clean"] - out["acc_poisoned"]
    for method, extra in (
        # as the service runs it (workers/strategy.py): τ = 1/λ̂_max, 20 power iterations of
        # full-network Hessian products on a 512-row subsample
        ("first_order", {"hessian_rows": 512, "power_iterations": 20}),
        (
            # as the service runs it for deep models (workers/strategy.py): last layer, exact
            # on the head features of all rows, CG damped by 1e-3·λ_max
            "second_order",
            {
                "solver": "cg",
                "damping_relative": 1e-3,
                "cg_max_iter": 100,
                "cg_tol": 1e-4,
                "last_k_layers": 1,
            },
        ),
    ):
        t = time.perf_counter()
        res = unlearn(
            poisoned,
            X,
            y,
            X[flip],
            y_poison[flip],
            X[flip],
            y[flip],
            UnlearnOptions(method=method, device=device, **extra),
        )
        sync(device)
        secs = time.perf_counter() - t
        acc = evaluate(res.model, Xt, yt)["accuracy"]
        out[f"{method}_s"] = secs
        out[f"acc_{method}"] = acc
        out[f"restored_{method}"] = (acc - out["acc_poisoned"]) / lost if lost > 0 else None
        out[f"speedup_{method}"] = train_s / secs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    args = parser.parse_args()
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    quick = args.quick or device == "cpu"
    if device.startswith("cuda"):
        # warm-up (CUDA context, cuBLAS/cuSOLVER handles, kernels), as a service worker is warm
        # after its start (workers/tasks.py); not timed
        convex_case(device, 2_000)
        multinomial_case(device, 2_000)
        cnn_case(device, 1_000, 1)
    rows = [
        convex_case(device, 10_000 if quick else 60_000),
        multinomial_case(device, 5_000 if quick else 60_000),
        cnn_case(device, 4_000 if quick else 20_000, 2 if quick else 10),
    ]
    for r in rows:
        print(f"\n{r['case']} on {r['device']}")
        for k, v in r.items():
            if k not in ("case", "device"):
                print(f"  {k:22} {v:.4g}" if isinstance(v, float) else f"  {k:22} {v}")
    out = ROOT / "benchmarks" / "results" / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
