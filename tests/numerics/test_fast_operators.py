"""The fast paths of the second-order update against the generic ones they replace:

- the closed-form linear-model Hessian-vector product (cached logit curvatures) against the
  double-backward product of ``Objective.hvp``, for binary/multinomial logistic regression and
  the smooth-hinge SVM, and the closed-form curvatures against torch.func;
- the block preconditioner with the soft-max flat subspace: still an exact CG solve, in far
  fewer iterations than the plain block preconditioner;
- the importance-sampled class blocks (unbiased, less noisy than uniform subsampling; CG with
  them still solves exactly), their float32 factorisation with its float64 fallback, and the
  per-version cache of the block preconditioner (used, same solution, validated bytes);
- the exact last-layer update of deep models on head features (``reduction``:
  "head_features") against the generic restricted update on the full network (Hessian columns
  from full-network products), for an MLP, a CNN and a char-LSTM.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from test_deep import small_model

from unlearning import TrainingOptions, UnlearnOptions, train, unlearn
from unlearning.architectures import flatten
from unlearning.factorization import logit_curvature
from unlearning.hessian import dense_hessian
from unlearning.model import to_tensors
from unlearning.objective import Objective
from unlearning.solvers import conjugate_gradient
from unlearning.updates import HEAD, _Data, _Step, _unlearn_tensors


def digits(n: int = 400):
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).astype(np.float64), y[:n]


@pytest.mark.parametrize(
    "arch,classes",
    [
        ({"kind": "logistic_regression"}, 2),
        ({"kind": "logistic_regression"}, 10),
        ({"kind": "linear_svm", "smoothing": 0.5}, 10),
    ],
)
def test_linear_hvp_matches_double_backward(arch, classes):
    X, y = digits()
    if classes == 2:
        y = (y >= 5).astype(np.int64)
    model, _ = train(arch, X, y, classes, TrainingOptions(l2=1.0, grad_tol=1e-6))
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    # base rows weighted 3× (a subsample scale) plus a removed and an added part
    data = _Data(Xt[:300], yt[:300], [(Xt[300:350], yt[300:350], 1.0), (Xt[350:], yt[350:], -1.0)])
    data.scale = 3.0
    op = data.linear_hvp(obj, theta)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(theta.shape[0], generator=gen, dtype=torch.float64)
        ref = data.hvp(obj, theta, v)
        assert torch.allclose(op(v), ref, rtol=1e-10, atol=1e-10 * float(ref.abs().max()))
    if arch["kind"] == "logistic_regression":
        # closed-form curvature vs torch.func on the spec's own loss
        from torch.func import hessian, vmap

        z = obj.logits(theta, Xt[:50])

        def loss1(zi, yi):
            return obj.spec.losses(zi.unsqueeze(0), yi.unsqueeze(0)).sum()

        ref_c = vmap(hessian(loss1))(z, yt[:50])
        assert torch.allclose(logit_curvature(obj, theta, Xt[:50], yt[:50]), ref_c, atol=1e-12)


def test_flat_subspace_block_preconditioner_is_exact_and_faster():
    X, y = digits(1000)
    model, _ = train(
        {"kind": "logistic_regression"}, X, y, 10, TrainingOptions(l2=1.0, grad_tol=1e-8)
    )
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    data = _Data(Xt, yt, [])
    step = _Step(obj, theta, data, None, UnlearnOptions(solver="cg", preconditioner="block"))
    b = obj.grad_sum(theta, Xt[:10], yt[:10])
    exact = torch.linalg.solve(dense_hessian(obj, theta, Xt, yt), b)
    metrics: dict = {}
    M = step.preconditioner(metrics)
    assert metrics["preconditioner_flat_subspace"] is True
    x, info = conjugate_gradient(step.hvp, b, tol=1e-10, max_iter=2000, preconditioner=M)
    assert info["converged"]
    assert float((x - exact).norm()) <= 1e-7 * float(exact.norm())
    # the plain block preconditioner (no flat-subspace term) needs more iterations
    from unlearning.factorization import flat_perm, glm_blocks
    from unlearning.solvers import block_preconditioner

    blocks = glm_blocks(obj, theta, Xt, yt) + obj.l2 * torch.eye(65, dtype=torch.float64)
    plain = block_preconditioner(blocks, flat_perm(10, 64))
    _, info_plain = conjugate_gradient(step.hvp, b, tol=1e-10, max_iter=2000, preconditioner=plain)
    assert info["iterations"] < info_plain["iterations"]


@pytest.mark.parametrize("kind", ["mlp", "cnn", "char_lstm"])
@pytest.mark.parametrize("method", ["second_order", "first_order"])
def test_head_reduction_matches_generic_last_layer_update(kind, method):
    model, Zx, Zy = small_model(kind)
    obj = Objective.for_model(model)
    # the change: correct the labels of the first points to the next class
    Zty = (Zy + 1) % model.n_classes
    if kind == "char_lstm":
        Xa, ya = Zx, Zty  # a tiny corrected "data set": the rewritten windows
    else:
        X, y = digits(120)
        Xa, ya = X.copy(), y.copy()
        ya[:5] = Zty
    opts = UnlearnOptions(
        method=method, solver="exact", last_k_layers=1, damping=0.1, tau=1e-3, device="cpu"
    )
    fast = unlearn(model, Xa, ya, Zx, Zy, Zx, Zty, opts)
    assert fast.metrics["reduction"] == "head_features"
    assert fast.metrics["gradient_residual_scope"] == "last_layer"
    dtype = next(iter(model.params.values())).dtype
    d, k = model.n_features, model.n_classes
    t = [
        to_tensors(a, b, d, k, torch.device("cpu"), dtype)
        for a, b in ((Xa, ya), (Zx, Zy), (Zx, Zty))
    ]
    slow = _unlearn_tensors(
        model, obj, t[0][0], t[0][1], t[1][0], t[1][1], t[2][0], t[2][1], opts, None, HEAD, 0.0
    )
    assert "reduction" not in slow.metrics
    for name in model.params:
        a, b = fast.model.params[name], slow.model.params[name]
        before = model.params[name]
        if name in HEAD:
            change = float((b - before).norm())
            assert change > 0
            assert float((a - b).norm()) <= 1e-3 * change + 1e-6
        else:
            assert torch.equal(a, before) and torch.equal(b, before)
    # the head residual equals the generic subset residual
    assert fast.metrics["gradient_residual"] == pytest.approx(
        slow.metrics["gradient_residual_subset"], rel=1e-3, abs=1e-5
    )


@pytest.mark.parametrize("classes", [2, 10])
def test_mixed_precision_cg_meets_the_float64_tolerance(classes):
    X, y = digits(1000)
    if classes == 2:
        y = (y >= 5).astype(np.int64)
    model, _ = train(
        {"kind": "logistic_regression"}, X, y, classes, TrainingOptions(l2=1.0, grad_tol=1e-10)
    )
    keep = np.arange(20, len(y))
    args = (model, X[keep], y[keep], X[:20], y[:20], X[:0], y[:0])
    exact = unlearn(*args, UnlearnOptions(solver="exact"))
    mixed = unlearn(*args, UnlearnOptions(solver="cg", cg_tol=1e-9, cg_precision="mixed"))
    plain = unlearn(*args, UnlearnOptions(solver="cg", cg_tol=1e-9, cg_precision="double"))
    assert mixed.metrics["precision"] == "mixed" and plain.metrics["precision"] == "float64"
    assert mixed.metrics["converged"] and mixed.metrics["relative_residual"] <= 1e-9
    assert mixed.metrics["outer_iterations"] >= 2  # float32 alone cannot reach 1e-9
    shapes = {n: tuple(t.shape) for n, t in model.params.items()}
    te, tm = flatten(exact.model.params, shapes), flatten(mixed.model.params, shapes)
    tu = te - flatten(model.params, shapes)
    assert float((tm - te).norm()) <= 1e-7 * float(tu.norm())
    # small data: "auto" keeps float64
    auto = unlearn(*args, UnlearnOptions(solver="cg", cg_tol=1e-9))
    assert auto.metrics["precision"] == "float64"


@pytest.mark.parametrize("classes", [2, 10])
def test_closed_form_gradient_sum_matches_per_sample_gradients(classes):
    X, y = digits(200)
    if classes == 2:
        y = (y >= 5).astype(np.int64)
    model, _ = train({"kind": "logistic_regression"}, X, y, classes, TrainingOptions(l2=1.0))
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes) + 0.1  # away from the optimum
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    ref = obj.per_sample_grads(theta, Xt, yt).sum(0)  # torch.func grad + vmap
    assert torch.allclose(obj.grad_sum(theta, Xt, yt), ref, rtol=1e-12, atol=1e-10)
    assert torch.equal(obj.grad_sum(theta, Xt[:0], yt[:0]), torch.zeros_like(theta))


def multinomial_digits(n: int = 1000):
    X, y = digits(n)
    model, _ = train(
        {"kind": "logistic_regression"}, X, y, 10, TrainingOptions(l2=1.0, grad_tol=1e-9)
    )
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes)
    return X, y, model, obj, theta


def test_sampled_curvature_blocks_are_unbiased_and_beat_uniform_sampling():
    from unlearning.factorization import curvature_blocks, sampled_curvature_blocks

    X, y, _, obj, theta = multinomial_digits()
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    cd = torch.diagonal(logit_curvature(obj, theta, Xt, yt), dim1=1, dim2=2)
    exact = curvature_blocks(Xt, cd)
    # the estimator of one seed is deterministic, in X's dtype
    a = sampled_curvature_blocks(Xt, cd, 100, seed=3)
    assert a.dtype == torch.float64 and torch.equal(
        a, sampled_curvature_blocks(Xt, cd, 100, seed=3)
    )

    def rel(est: torch.Tensor) -> float:
        return float((est - exact).norm() / exact.norm())

    singles = [sampled_curvature_blocks(Xt, cd, 100, seed=s) for s in range(100)]
    mean = torch.stack(singles).mean(0)
    single_err = float(np.mean([rel(e) for e in singles]))
    # unbiased: the mean of 100 independent estimates is ~10× closer than one (1/√100)
    assert rel(mean) < single_err / 5 and rel(mean) < 0.03
    # uniform subsampling of the same number of rows (scaled by n/rows) is much noisier
    gen = torch.Generator().manual_seed(0)
    uniform = []
    for _ in range(20):
        pick = torch.randperm(len(y), generator=gen)[:100]
        uniform.append(rel(curvature_blocks(Xt[pick], cd[pick]) * (len(y) / 100)))
    assert single_err < 0.6 * float(np.mean(uniform))


def test_importance_sampled_block_preconditioner_gives_the_exact_solve(monkeypatch):
    import unlearning.updates as updates

    monkeypatch.setattr(updates, "BLOCK_PRECOND_ROWS", 200)  # sample beyond 200 rows
    X, y, _, obj, theta = multinomial_digits()
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    b = obj.grad_sum(theta, Xt[:10], yt[:10])
    step = _Step(obj, theta, _Data(Xt, yt), None, UnlearnOptions(solver="cg"))
    metrics: dict = {}
    M = step.preconditioner(metrics)
    assert metrics["preconditioner_sampling"] == "importance"
    assert metrics["preconditioner_rows"] == 200 and metrics["preconditioner_source"] == "built"
    x, info = conjugate_gradient(step.hvp, b, tol=1e-10, max_iter=2000, preconditioner=M)
    exact = torch.linalg.solve(dense_hessian(obj, theta, Xt, yt), b)
    assert info["converged"]
    assert float((x - exact).norm()) <= 1e-7 * float(exact.norm())
    _, plain = conjugate_gradient(step.hvp, b, tol=1e-10, max_iter=2000)
    assert info["iterations"] <= 0.5 * plain["iterations"]


def test_cached_block_preconditioner_serves_cg_requests_of_its_version():
    from unlearning import Factorization, build_block_factorization

    X, y, model, obj, theta = multinomial_digits()
    fact = Factorization.from_bytes(build_block_factorization(model, X, y).to_bytes())
    assert fact.kind == "block_inverse" and fact.L.shape == (10, 65, 65)
    assert fact.L.dtype == torch.float32
    with pytest.raises(ValueError, match="cannot solve exactly"):
        fact.woodbury_solve(torch.zeros(650, dtype=torch.float64), *[torch.zeros(650, 0)] * 2)
    keep = np.arange(len(y)) >= 10
    args = (model, X[keep], y[keep], X[:10], y[:10], X[:0], y[:0])
    opts = UnlearnOptions(solver="cg", cg_tol=1e-10)
    cached = unlearn(*args, opts, factorization=fact)
    built = unlearn(*args, opts)
    assert cached.metrics["preconditioner_source"] == "cached"
    assert built.metrics["preconditioner_source"] == "built"
    assert "factorization_note" not in cached.metrics
    t_c, t_b = flatten(cached.model.params, obj.shapes), flatten(built.model.params, obj.shapes)
    assert float((t_c - t_b).norm()) <= 1e-7 * float((t_b - theta).norm())
    # the (approximate) cache of D serves D' = D − Z: no more iterations than a fresh build + 2
    assert cached.metrics["iterations"] <= built.metrics["iterations"] + 2
    # another version's parameters: not used, and the note says why
    other = unlearn(built.model, *args[1:], opts, factorization=fact)
    assert other.metrics["preconditioner_source"] == "built"
    assert "parameters differ" in other.metrics["factorization_note"]
    # a binary model has no class blocks to cache
    yb = (y >= 5).astype(np.int64)
    binary, _ = train({"kind": "logistic_regression"}, X, yb, 2, TrainingOptions(l2=1.0))
    with pytest.raises(ValueError, match="multiclass linear"):
        build_block_factorization(binary, X, yb)


def test_block_factorization_bytes_are_validated():
    from unlearning import Factorization, build_block_factorization

    X, y, model, _, _ = multinomial_digits(300)
    fact = build_block_factorization(model, X, y)
    bad = Factorization(**{**fact.__dict__, "L": fact.L[:, :64, :64]})
    with pytest.raises(ValueError, match="block_inverse factor shape"):
        Factorization.from_bytes(bad.to_bytes())
    odd = Factorization(**{**fact.__dict__, "kind": "qr"})
    with pytest.raises(ValueError, match="unknown factorisation kind"):
        Factorization.from_bytes(odd.to_bytes())


def test_float32_block_factorisation_falls_back_to_the_blocks_precision():
    from unlearning.solvers import block_inverses

    gen = torch.Generator().manual_seed(0)
    good = torch.randn(3, 20, 40, generator=gen, dtype=torch.float64)
    good = good @ good.transpose(1, 2) + torch.eye(20, dtype=torch.float64)
    inv = block_inverses(good, torch.float32)
    assert inv.dtype == torch.float32
    assert torch.allclose(inv.double() @ good, torch.eye(20, dtype=torch.float64), atol=1e-4)
    # numerically singular in float32 (rank one + 1e-9·I), positive definite in float64
    v = torch.randn(2, 20, 1, generator=gen, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    bad = v @ v.transpose(1, 2) + 1e-9 * torch.eye(20, dtype=torch.float64)
    inv = block_inverses(bad, torch.float32)
    assert inv.dtype == torch.float64
    eye = torch.eye(20, dtype=torch.float64).expand(2, 20, 20)
    assert torch.allclose(inv @ bad, eye, atol=1e-5)
    # indefinite (a sampled sum of signed parts can be): still an SPD inverse, exact on the
    # positive eigenspace
    ind = torch.diag_embed(torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64))
    inv = block_inverses(ind)
    assert torch.linalg.eigvalsh(inv).min() > 0
    assert torch.allclose(inv[0, :2, :2], torch.diag(torch.tensor([0.5, 1.0], dtype=torch.float64)))


def test_cached_factorisations_are_refused_where_they_do_not_apply():
    from unlearning import Factorization, build_block_factorization, build_factorization

    X, y, model, _, _ = multinomial_digits(600)
    keep = np.arange(len(y)) >= 6
    args = (model, X[keep], y[keep], X[:6], y[:6], X[:0], y[:0])
    blocks = build_block_factorization(model, X, y)
    for opts in (
        UnlearnOptions(solver="cg", chunk_size=2),
        UnlearnOptions(solver="cg", damping=1.0),
        UnlearnOptions(solver="cg", damping_relative=1e-3),
    ):
        r = unlearn(*args, opts, factorization=blocks)
        assert "damping in use" in r.metrics["factorization_note"]
        assert r.metrics["preconditioner_source"] == "built"
    # a block factor of the wrong shape (same parameter count) is not used
    wrong = Factorization(**{**blocks.__dict__, "L": torch.zeros(2, 325, 325)})
    r = unlearn(*args, UnlearnOptions(solver="cg"), factorization=wrong)
    assert "does not fit the model" in r.metrics["factorization_note"]
    assert r.metrics["preconditioner_source"] == "built"
    # a cached Cholesky factor holds no damping: relative damping rebuilds the Hessian
    Xb, yb = X[:, :20], (y >= 5).astype(np.int64)
    binary, _ = train({"kind": "logistic_regression"}, Xb, yb, 2, TrainingOptions(l2=1.0))
    fact = build_factorization(binary, Xb, yb)
    bargs = (binary, Xb[keep], yb[keep], Xb[:6], yb[:6], Xb[:0], yb[:0])
    opts = UnlearnOptions(solver="exact", damping_relative=0.1)
    cached = unlearn(*bargs, opts, factorization=fact)
    rebuilt = unlearn(*bargs, opts)
    assert cached.metrics["factorization"] == "rebuilt"
    assert "damping in use" in cached.metrics["factorization_note"]
    for name in binary.params:
        assert torch.allclose(cached.model.params[name], rebuilt.model.params[name])


def test_sampled_cache_serves_the_mixed_precision_cg(monkeypatch):
    import unlearning.updates as updates
    from unlearning import Factorization, build_block_factorization

    monkeypatch.setattr(updates, "CACHED_BLOCK_ROWS", 200)  # the cache is sampled too
    X, y, model, obj, theta = multinomial_digits()
    fact = Factorization.from_bytes(build_block_factorization(model, X, y).to_bytes())
    keep = np.arange(len(y)) >= 10
    opts = UnlearnOptions(solver="cg", cg_tol=1e-10, cg_precision="mixed")
    r = unlearn(model, X[keep], y[keep], X[:10], y[:10], X[:0], y[:0], opts, factorization=fact)
    assert r.metrics["precision"] == "mixed" and r.metrics["preconditioner_source"] == "cached"
    assert r.metrics["converged"]
    Xa, ya = torch.as_tensor(X[keep]), torch.as_tensor(y[keep])
    b = obj.grad_sum(theta, torch.as_tensor(X[:10]), torch.as_tensor(y[:10]))
    exact = theta + torch.linalg.solve(dense_hessian(obj, theta, Xa, ya), b)
    got = flatten(r.model.params, obj.shapes)
    assert float((got - exact).norm()) <= 1e-7 * float((exact - theta).norm())
