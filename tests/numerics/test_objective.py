"""Gradient and dense Hessian against torch.func.hessian, NumPy formulas and finite differences."""

import numpy as np
import pytest
import torch
from torch.func import hessian
from unlearning_testlib import numpy_gradient, sum_objective

from unlearning.architectures import get_spec, param_shapes
from unlearning.hessian import cholesky, cholesky_solve, dense_hessian, largest_eigenvalue
from unlearning.objective import Objective

ARCH = {"kind": "logistic_regression"}

# torch.func.hessian (forward-mode AD) triggers a torch-internal torch.jit deprecation warning.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def make(k: int, n: int = 40, d: int = 4, lam: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, n)
    obj = Objective(get_spec(ARCH), ARCH, param_shapes(ARCH, d, k), lam)
    theta = torch.as_tensor(rng.normal(size=obj.n_params) * 0.5)
    return obj, theta, torch.as_tensor(X), torch.as_tensor(y), X, y


@pytest.mark.parametrize("k", [2, 3, 5])
def test_gradient_matches_numpy_and_finite_differences(k):
    obj, theta, Xt, yt, X, y = make(k)
    g = obj.gradient(theta, Xt, yt).numpy()
    np.testing.assert_allclose(
        g, numpy_gradient(theta.numpy(), X, y, k, 0.3), rtol=1e-12, atol=1e-12
    )
    eps = 1e-6
    fd = np.array(
        [
            (
                sum_objective(theta.numpy() + eps * e, X, y, k, 0.3)
                - sum_objective(theta.numpy() - eps * e, X, y, k, 0.3)
            )
            / (2 * eps)
            for e in np.eye(theta.numel())
        ]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
    f, _ = obj.value_and_grad(theta, Xt, yt)
    assert f == pytest.approx(sum_objective(theta.numpy(), X, y, k, 0.3), rel=1e-13)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_dense_hessian_matches_torch_func_and_finite_differences(k):
    obj, theta, Xt, yt, X, y = make(k)
    H = dense_hessian(obj, theta, Xt, yt)
    H_ref = hessian(lambda t: obj.value(t, Xt, yt))(theta)
    torch.testing.assert_close(H, H_ref, rtol=1e-10, atol=1e-10)
    H_generic = dense_hessian(obj, theta, Xt, yt, closed_form=False)
    torch.testing.assert_close(H_generic, H_ref, rtol=1e-10, atol=1e-10)
    eps = 1e-5
    fd = np.stack(
        [
            (
                numpy_gradient(theta.numpy() + eps * e, X, y, k, 0.3)
                - numpy_gradient(theta.numpy() - eps * e, X, y, k, 0.3)
            )
            / (2 * eps)
            for e in np.eye(theta.numel())
        ]
    )
    np.testing.assert_allclose(H.numpy(), fd, rtol=1e-6, atol=1e-6)
    assert torch.equal(H, H.T)


@pytest.mark.parametrize("k", [2, 4])
def test_per_sample_gradients_hvp_and_solve(k):
    obj, theta, Xt, yt, X, y = make(k)
    G = obj.per_sample_grads(theta, Xt, yt)
    assert G.shape == (Xt.shape[0], theta.numel())
    for i in (0, 7):
        gi = numpy_gradient(theta.numpy(), X[i : i + 1], y[i : i + 1], k, 0.0)
        np.testing.assert_allclose(G[i].numpy(), gi, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        obj.grad_sum(theta, Xt, yt), obj.gradient(theta, Xt, yt) - 0.3 * theta
    )
    assert obj.grad_sum(theta, Xt[:0], yt[:0]).abs().sum() == 0
    H = dense_hessian(obj, theta, Xt, yt)
    v = torch.randn(theta.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(obj.hvp(theta, Xt, yt, v), H @ v)
    L, mu = cholesky(H)
    assert mu == 0.0
    torch.testing.assert_close(H @ cholesky_solve(L, v), v)
    lam_max = largest_eigenvalue(obj, theta, Xt, yt, rtol=1e-12, max_iter=5000)
    assert lam_max == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-6)
