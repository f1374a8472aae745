"""End-to-end timings through the HTTP API of a real ``unlearnd run`` (embedded mode).

For each dataset: train version 1, delete 1% of the records with the exact second-order update
(method auto), then delete another 1% with ``method: retrain``; report job latency (submit →
succeeded, as a client sees it) and compute time (the job's own ``wall_time_s``), the speed-up
of unlearning over retraining, and the distance of the update to an independent retraining.

    .venv/bin/python benchmarks/end_to_end.py            # prints a table, writes JSON + PNG
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))
sys.path.insert(0, str(ROOT / "tests"))

from svc import npz_bytes, record_ids, start_service, stop_service, wait_job  # noqa: E402


class _Backend:
    def __init__(self, d: Path) -> None:
        self.database_url = f"sqlite:///{d / 'unlearnd.db'}"
        self.broker_url = f"sqla+sqlite:///{d / 'broker.db'}"
        self.queue = "gpu"


def datasets() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    from sklearn.datasets import load_breast_cancer, load_digits

    out = {}
    X, y = load_breast_cancer(return_X_y=True)
    out["breast_cancer (569×30, binary)"] = ((X - X.mean(0)) / X.std(0), y, 1.0)
    X, y = load_digits(return_X_y=True)
    out["digits (1797×64, 10 classes)"] = (X / 16.0, y, 1.0)
    rng = np.random.default_rng(0)
    n, d = 20_000, 200
    w = rng.normal(size=d)
    X = rng.normal(size=(n, d))
    y = (X @ w + rng.normal(scale=4.0, size=n) > 0).astype(int)
    out["synthetic (20000×200, binary)"] = (X, y, 1.0)
    return out


def timed_job(client, method: str, post) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    r = post()
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], timeout=1800)
    assert job["status"] == "succeeded", job
    return {"latency_s": time.perf_counter() - t0, "job": job}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        svc = start_service(_Backend(Path(tmp)), Path(tmp) / "data")
        try:
            client = svc.client()
            for i, (name, (X, y, l2)) in enumerate(datasets().items()):
                ids = record_ids(len(y), f"b{i}")
                r = client.post(
                    "/v1/datasets",
                    files={"file": ("d.npz", npz_bytes(X=X, y=y, record_ids=ids))},
                    data={"name": f"bench-{i}"},
                )
                ds = r.json()
                train = timed_job(
                    client,
                    "train",
                    lambda ds=ds, i=i, l2=l2: client.post(
                        "/v1/models",
                        json={
                            "name": f"bench-{i}",
                            "dataset_id": ds["id"],
                            "architecture": {"kind": "logistic_regression"},
                            "training": {"l2": l2},
                        },
                    ),
                )
                m = max(1, len(y) // 100)
                rng = np.random.default_rng(i)
                perm = rng.permutation(len(y))
                first, second = ids[perm[:m]].tolist(), ids[perm[m : 2 * m]].tolist()

                def delete(rec, method, key, i=i):  # type: ignore[no-untyped-def]
                    return lambda: client.post(
                        "/v1/requests",
                        headers={"Idempotency-Key": key},
                        json={
                            "model": f"bench-{i}",
                            "method": method,
                            "kind": "delete_records",
                            "record_ids": rec,
                        },
                    )

                upd = timed_job(client, "auto", delete(first, "auto", f"b{i}-u"))
                ret = timed_job(client, "retrain", delete(second, "retrain", f"b{i}-r"))
                um, rm = upd["job"]["result"]["metrics"], ret["job"]["result"]["metrics"]
                rows.append(
                    {
                        "dataset": name,
                        "n_records": len(y),
                        "n_deleted": m,
                        "train_latency_s": train["latency_s"],
                        "train_compute_s": train["job"]["result"]["metrics"]["wall_time_s"],
                        "unlearn_method": upd["job"]["result"]["method"],
                        "unlearn_latency_s": upd["latency_s"],
                        "unlearn_compute_s": um["wall_time_s"],
                        "retrain_latency_s": ret["latency_s"],
                        "retrain_compute_s": rm["wall_time_s"],
                        "speedup_compute": rm["wall_time_s"] / um["wall_time_s"],
                        "speedup_latency": ret["latency_s"] / upd["latency_s"],
                        "gradient_residual_update": um["gradient_residual"],
                        "gradient_residual_retrain": rm["gradient_residual"],
                    }
                )
        finally:
            stop_service(svc)
    header = (
        f"{'dataset':34} {'train s':>8} {'unlearn s':>10} {'retrain s':>10} "
        f"{'speed-up':>9} {'latency u/r s':>14} {'residual':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['dataset']:34} {r['train_compute_s']:8.3f} {r['unlearn_compute_s']:10.4f} "
            f"{r['retrain_compute_s']:10.3f} {r['speedup_compute']:8.1f}× "
            f"{r['unlearn_latency_s']:6.2f}/{r['retrain_latency_s']:<7.2f} "
            f"{r['gradient_residual_update']:9.2e}"
        )
    out = ROOT / "benchmarks" / "results" / "end_to_end.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwrote {out}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 3.5))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["unlearn_compute_s"] for r in rows], 0.4, label="second-order update")
        ax.bar(x + 0.2, [r["retrain_compute_s"] for r in rows], 0.4, label="retraining")
        ax.set_yscale("log")
        ax.set_xticks(x, [r["dataset"] for r in rows], fontsize=7)
        ax.set_ylabel("compute time per 1% deletion (s)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
