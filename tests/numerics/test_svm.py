"""linear_svm: softplus-smoothed hinge ℓ_h(t) = h·ln(1 + exp((1 − t)/h)), t = ỹ z, checked
against scipy.optimize on an independent NumPy loss/gradient (binary and one-vs-rest)."""

import numpy as np
import pytest
import scipy.optimize as so
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.preprocessing import StandardScaler
from unlearning_testlib import theta_of

from unlearning import (
    TrainingOptions,
    UnlearnOptions,
    evaluate,
    train,
    unlearn,
    validate_architecture,
)


def numpy_objective(th, X, y, k, lam, h):
    d = X.shape[1]
    ko = 1 if k == 2 else k
    Y = (2 * y - 1)[:, None] if ko == 1 else 2 * np.eye(k)[y] - 1
    W, b = th[: ko * d].reshape(ko, d), th[ko * d :]
    u = (1 - Y * (X @ W.T + b)) / h
    G = -Y / (1 + np.exp(-u))
    f = h * np.logaddexp(0, u).sum() + 0.5 * lam * th @ th
    return f, np.concatenate([(G.T @ X).ravel(), G.sum(0)]) + lam * th


@pytest.mark.parametrize(
    ("loader", "h"), [(load_breast_cancer, 0.5), (load_wine, 0.5), (load_breast_cancer, 0.1)]
)
def test_optimum_matches_scipy(loader, h):
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    k = int(y.max()) + 1
    model, m = train({"kind": "linear_svm", "smoothing": h}, X, y, k, TrainingOptions(l2=1.0))
    assert m["converged"] and m["grad_norm"] <= 1e-10 * len(y)
    th = theta_of(model)
    _, g = numpy_objective(th, X, y, k, 1.0, h)
    assert np.linalg.norm(g) <= 1e-7
    ref = so.minimize(
        numpy_objective,
        np.zeros_like(th),
        args=(X, y, k, 1.0, h),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-16, "maxiter": 20000},
    )
    assert np.linalg.norm(th - ref.x) <= 1e-5 * np.linalg.norm(ref.x)
    assert m["train_accuracy"] > 0.95


def test_architecture_validation_and_unlearning():
    assert validate_architecture({"kind": "linear_svm"}) == {
        "kind": "linear_svm",
        "multiclass": "ovr",
        "smoothing": 0.5,
    }
    for bad in ({"smoothing": 0}, {"smoothing": "x"}, {"multiclass": "cs"}, {"C": 1}):
        with pytest.raises(ValueError):
            validate_architecture({"kind": "linear_svm", **bad})
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    arch = {"kind": "linear_svm"}
    model = train(arch, X, y, 2, TrainingOptions(l2=10.0))[0]
    idx = np.arange(0, 50, 10)
    keep = np.ones(len(y), bool)
    keep[idx] = False
    retrained = train(arch, X[keep], y[keep], 2, TrainingOptions(l2=10.0))[0]
    for solver in ("exact", "cg"):
        res = unlearn(
            model, X[keep], y[keep], X[idx], y[idx], X[:0], y[:0], UnlearnOptions(solver=solver)
        )
        d0 = np.linalg.norm(theta_of(model) - theta_of(retrained))
        assert np.linalg.norm(theta_of(res.model) - theta_of(retrained)) <= 0.05 * d0
    assert evaluate(res.model, X, y)["accuracy"] > 0.95
