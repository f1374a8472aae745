"""Cached factorisation + Woodbury correction == rebuilding the Hessian (1e-8 relative)."""

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.preprocessing import StandardScaler
from unlearning_testlib import theta_of

from unlearning import (
    Factorization,
    TrainingOptions,
    UnlearnOptions,
    build_factorization,
    train,
    unlearn,
)


def setup(loader, arch, lam=1.0):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    k = int(y.max()) + 1
    return X, y, k, train(arch, X, y, k, TrainingOptions(l2=lam))[0]


def change(X, y, k, kind):
    idx = np.array([1, 7, 20, 33, 41])
    Zx, Zy = X[idx], y[idx]
    Xa, ya = X.copy(), y.copy()
    if kind == "delete":
        keep = np.ones(len(y), bool)
        keep[idx] = False
        return (X[keep], y[keep]), (Zx, Zy), (X[:0], y[:0])
    if kind == "labels":
        Zty = (Zy + 1) % k
        ya[idx] = Zty
        return (Xa, ya), (Zx, Zy), (Zx, Zty)
    Ztx = Zx.copy()
    Ztx[:, :4] = 0.0
    Xa[idx] = Ztx
    return (Xa, ya), (Zx, Zy), (Ztx, Zy)


@pytest.mark.parametrize("kind", ["delete", "labels", "features"])
@pytest.mark.parametrize(
    ("loader", "arch"),
    [
        (load_breast_cancer, {"kind": "logistic_regression"}),
        (load_wine, {"kind": "logistic_regression"}),
        (load_wine, {"kind": "linear_svm"}),
        (load_breast_cancer, {"kind": "linear_svm", "smoothing": 0.25}),
    ],
)
def test_woodbury_equals_rebuild(loader, arch, kind):
    X, y, k, model = setup(loader, arch)
    fact = Factorization.from_bytes(build_factorization(model, X, y).to_bytes())
    (Xa, ya), (Zx, Zy), (Ztx, Zty) = change(X, y, k, kind)
    rebuilt = unlearn(model, Xa, ya, Zx, Zy, Ztx, Zty, UnlearnOptions(solver="exact"))
    cached = unlearn(
        model, Xa, ya, Zx, Zy, Ztx, Zty, UnlearnOptions(solver="exact"), factorization=fact
    )
    assert rebuilt.metrics["factorization"] == "rebuilt"
    assert cached.metrics["factorization"] == "cached-woodbury"
    t0, tr, tc = theta_of(model), theta_of(rebuilt.model), theta_of(cached.model)
    assert np.linalg.norm(tc - tr) <= 1e-8 * np.linalg.norm(tr - t0)
    assert cached.metrics["relative_residual"] <= 1e-8


def test_serialisation_and_mismatch():
    X, y, k, model = setup(load_breast_cancer, {"kind": "logistic_regression"})
    fact = build_factorization(model, X, y)
    data = fact.to_bytes()
    back = Factorization.from_bytes(data)
    assert back.n_rows == len(y) and back.l2 == 1.0
    np.testing.assert_array_equal(back.L.numpy(), fact.L.numpy())
    with pytest.raises(ValueError, match="factorisation"):
        Factorization.from_bytes(b"garbage-bytes-not-safetensors")
    (Xa, ya), (Zx, Zy), (Ztx, Zty) = change(X, y, k, "delete")
    other = train({"kind": "logistic_regression"}, X, y, k, TrainingOptions(l2=2.0))[0]
    res = unlearn(other, Xa, ya, Zx, Zy, Ztx, Zty, UnlearnOptions(), factorization=fact)
    assert res.metrics["factorization"] == "rebuilt"
    assert "cache not used" in res.metrics["factorization_note"]
    with pytest.raises(ValueError, match="parameters"):
        build_factorization(model, X, y, max_params=10)
