"""Training: optimum vs scikit-learn, solvers, determinism, options validation."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from unlearning_testlib import numpy_gradient, theta_of

from unlearning import TrainingOptions, parameter_count, train

ARCH = {"kind": "logistic_regression"}


def data(k: int, n: int = 300, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(k, d))
    y = np.argmax(X @ W.T + rng.gumbel(size=(n, k)), axis=1)
    return X, y


@pytest.mark.parametrize(("k", "lam"), [(2, 1e-2), (2, 1.0), (3, 0.1), (5, 1.0)])
def test_optimum_matches_sklearn(k, lam):
    X, y = data(k)
    model, metrics = train(ARCH, X, y, k, TrainingOptions(l2=lam))
    assert metrics["converged"] and metrics["solver"] == "newton"
    assert metrics["grad_norm"] <= 1e-10 * len(y)
    # sklearn: C·Σℓ + ½‖w‖² with w on [X, 1] (no separate intercept) == our objective / C.
    # Binary: one coefficient row; multinomial: k rows (same over-parametrisation as ours).
    Xa = np.hstack([X, np.ones((len(y), 1))])
    clf = LogisticRegression(
        fit_intercept=False, C=1.0 / lam, tol=1e-14, max_iter=10_000, solver="newton-cholesky"
    ).fit(Xa, y)
    ours = np.hstack([model.params["weight"].numpy(), model.params["bias"].numpy()[:, None]])
    assert clf.coef_.shape == ours.shape
    np.testing.assert_allclose(ours, clf.coef_, rtol=1e-5, atol=1e-7 * np.abs(ours).max())
    g = numpy_gradient(theta_of(model), X, y, k, lam)
    assert np.linalg.norm(g) == pytest.approx(metrics["grad_norm"], rel=1e-3, abs=1e-12)
    assert metrics["train_accuracy"] == pytest.approx(clf.score(Xa, y))
    assert metrics["loss"] > 0 and metrics["iterations"] >= 1 and metrics["wall_time_s"] >= 0


def test_model_layout_and_dtype():
    X, y = data(2)
    model, _ = train(ARCH, X, y, 2, TrainingOptions(l2=0.5))
    assert model.params["weight"].shape == (1, 6) and model.params["bias"].shape == (1,)
    assert all(
        t.dtype == torch.float64 and t.is_contiguous() and t.device.type == "cpu"
        for t in model.params.values()
    )
    assert parameter_count(ARCH, 6, 2) == 7 and parameter_count(ARCH, 6, 4) == 28
    assert model.training["l2"] == 0.5 and model.l2 == 0.5
    assert model.n_features == 6 and model.n_classes == 2


@pytest.mark.parametrize("k", [2, 4])
def test_lbfgs_reaches_the_same_optimum(k):
    X, y = data(k)
    newton, _ = train(ARCH, X, y, k, TrainingOptions(l2=0.1))
    lbfgs, m = train(ARCH, X, y, k, TrainingOptions(l2=0.1, solver="lbfgs", max_iter=2000))
    assert m["solver"] == "lbfgs" and m["converged"]
    np.testing.assert_allclose(theta_of(lbfgs), theta_of(newton), rtol=1e-6, atol=1e-7)
    _, m = train(ARCH, X, y, k, TrainingOptions(l2=0.1, newton_max_params=3))
    assert m["solver"] == "lbfgs"


def test_deterministic():
    X, y = data(3)
    a, _ = train(ARCH, X, y, 3, TrainingOptions(l2=0.1, seed=7))
    b, _ = train(ARCH, X, y, 3, TrainingOptions(l2=0.1, seed=7))
    for name in a.params:
        assert torch.equal(a.params[name], b.params[name])


def test_options_from_dict():
    opts = TrainingOptions.from_dict({"l2": 0.5, "seed": 3})
    assert opts.l2 == 0.5 and opts.seed == 3 and opts.grad_tol == 1e-10
    assert TrainingOptions.from_dict({}).to_dict() == TrainingOptions().to_dict()
    bad = [
        ({"l2": 0}, "l2"),
        ({"l2": -1.0}, "l2"),
        ({"l2": "1"}, "l2"),
        ({"l2": float("nan")}, "l2"),
        ({"seed": 1.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"max_iter": 0}, "max_iter"),
        ({"grad_tol": 0.0}, "grad_tol"),
        ({"solver": "sgd"}, "solver"),
        ({"device": "tpu"}, "device"),
        ({"epochs": 0}, "epochs"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ]
    for d, field in bad:
        with pytest.raises(ValueError, match=field):
            TrainingOptions.from_dict(d)
    with pytest.raises(ValueError):
        TrainingOptions.from_dict([("l2", 1.0)])


def test_bad_inputs():
    X, y = data(2, n=20)
    with pytest.raises(ValueError, match="labels"):
        train(ARCH, X, y + 5, 2, TrainingOptions())
    with pytest.raises(ValueError, match="NaN"):
        train(ARCH, np.where(X > 1, np.nan, X), y, 2, TrainingOptions())
    with pytest.raises(ValueError, match="shape"):
        train(ARCH, X, y[:-1], 2, TrainingOptions())
    with pytest.raises(ValueError, match="n_classes"):
        train(ARCH, X, y * 0, 1, TrainingOptions())
    with pytest.raises(ValueError, match="not supported yet"):
        train({"kind": "transformer", "hidden": [8]}, X, y, 2, TrainingOptions())


def test_device_option():
    assert TrainingOptions(device="auto").device == "auto"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TrainingOptions(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    from unlearning import UnlearnOptions, unlearn

    X, y = data(3)
    cpu, _ = train(ARCH, X, y, 3, TrainingOptions(l2=0.1))
    gpu, _ = train(ARCH, X, y, 3, TrainingOptions(l2=0.1, device="cuda"))
    assert gpu.params["weight"].device.type == "cpu"
    np.testing.assert_allclose(theta_of(gpu), theta_of(cpu), rtol=1e-8, atol=1e-10)
    a = unlearn(cpu, X[5:], y[5:], X[:5], y[:5], X[:0], y[:0], UnlearnOptions())
    b = unlearn(cpu, X[5:], y[5:], X[:5], y[:5], X[:0], y[:0], UnlearnOptions(device="cuda"))
    np.testing.assert_allclose(theta_of(b.model), theta_of(a.model), rtol=1e-8, atol=1e-10)
