"""Deep catalogue entries (mlp, cnn, char_lstm): architecture JSON, per-sample gradients and
Hessian-vector products against independent computations, deterministic training, text windows
and rectification."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from unlearning import (
    TrainingOptions,
    evaluate,
    model_from_safetensors,
    model_to_safetensors,
    train,
    validate_architecture,
)
from unlearning import text as tx
from unlearning.architectures import flatten, param_shapes, unflatten
from unlearning.deep import CHAR_LSTM_SPEC, image_input_shape
from unlearning.model import TrainedModel
from unlearning.objective import Objective


def digits(n: int = 300):
    X, y = load_digits(return_X_y=True)
    return (X[:n] / 16.0).astype(np.float64), y[:n]


def small_model(kind: str, seed: int = 0) -> tuple[TrainedModel, np.ndarray, np.ndarray]:
    """A briefly trained model of ``kind`` and a few of its training points (X, y)."""
    if kind == "char_lstm":
        corpus = "the cat sat on the mat. the dog ate the hat. " * 4
        arch = {"kind": "char_lstm", "hidden": 8, "layers": 2, "embedding": 4, "window": 6}
        model, _ = tx.train_text(arch, corpus, TrainingOptions(epochs=2, seed=seed, lr=1e-2))
        X, y = tx.windows(corpus, 6, 1, model.architecture["vocabulary"])
        return model, X[:5], y[:5]
    X, y = digits(120)
    arch = (
        {"kind": "mlp", "hidden": [12, 8], "activation": "tanh"}
        if kind == "mlp"
        else {"kind": "cnn", "channels": [3, 4], "convs_per_block": 2}
    )
    model, _ = train(arch, X, y, 10, TrainingOptions(epochs=2, seed=seed, lr=1e-2))
    return model, X[:5], y[:5]


def test_architectures_normalise_and_validate():
    assert validate_architecture({"kind": "mlp"}) == {
        "kind": "mlp",
        "hidden": [64],
        "activation": "relu",
    }
    assert validate_architecture({"kind": "cnn", "channels": [16, 32]}) == {
        "kind": "cnn",
        "channels": [16, 32],
        "convs_per_block": 1,
    }
    lstm = validate_architecture({"kind": "char_lstm", "hidden": 256, "layers": 2})
    assert lstm == {"kind": "char_lstm", "hidden": 256, "layers": 2, "embedding": 32, "window": 32}
    for bad, what in [
        ({"kind": "mlp", "hidden": [0]}, "hidden"),
        ({"kind": "mlp", "hidden": 64}, "hidden"),
        ({"kind": "mlp", "activation": "gelu"}, "activation"),
        ({"kind": "cnn", "channels": []}, "channels"),
        ({"kind": "cnn", "input_shape": [8, 8]}, "input_shape"),
        ({"kind": "cnn", "depth": 3}, "depth"),
        ({"kind": "char_lstm", "layers": 0}, "layers"),
        ({"kind": "char_lstm", "vocabulary": "aa"}, "vocabulary"),
    ]:
        with pytest.raises(ValueError, match=what):
            validate_architecture(bad)
    with pytest.raises(ValueError, match="input_shape"):
        param_shapes({"kind": "cnn"}, 64, 10)
    shapes = param_shapes({"kind": "cnn", "input_shape": [1, 8, 8]}, 64, 10)
    conv = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"]
    assert list(shapes) == [*conv, "head.weight", "head.bias"]
    assert shapes["head.weight"] == (10, 32 * 2 * 2)
    names = list(param_shapes({"kind": "char_lstm", "layers": 2}, 32, 40))
    assert names[:3] == ["embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    assert names[-2:] == ["head.weight", "head.bias"]


def test_cnn_input_shape_from_data():
    X, y = digits(60)
    opts = TrainingOptions(epochs=1)
    model, _ = train({"kind": "cnn", "channels": [2]}, X.reshape(-1, 8, 8), y, 10, opts)
    assert model.architecture["input_shape"] == [1, 8, 8]
    assert model.n_features == 64
    model2, _ = train({"kind": "cnn", "channels": [2]}, X, y, 10, opts)  # 64 = 8² inferred
    assert model2.architecture["input_shape"] == [1, 8, 8]
    assert image_input_shape(np.zeros((2, 3, 4, 5)), {}) == (3, 4, 5)
    with pytest.raises(ValueError, match="input_shape"):
        image_input_shape(np.zeros((2, 10)), {})
    # Evaluation and serialisation work on flattened rows.
    restored = model_from_safetensors(model_to_safetensors(model))
    assert restored.architecture == model.architecture
    assert evaluate(restored, X, y) == evaluate(model, X, y)


def _nn_reference(model: TrainedModel) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The same network built from torch.nn modules (an independent forward), and its parameters
    under our names."""
    arch, p = model.architecture, model.params
    kind = arch["kind"]
    named: dict[str, torch.Tensor] = {}

    def put(prefix: str, mod: torch.nn.Module) -> None:
        mod.weight.data = p[f"{prefix}.weight"].clone()
        mod.bias.data = p[f"{prefix}.bias"].clone()
        named[f"{prefix}.weight"], named[f"{prefix}.bias"] = mod.weight, mod.bias

    if kind == "mlp":
        layers: list[torch.nn.Module] = []
        prev = model.n_features
        for i, h in enumerate(arch["hidden"], start=1):
            lin = torch.nn.Linear(prev, h)
            put(f"fc{i}", lin)
            layers += [lin, torch.nn.Tanh() if arch["activation"] == "tanh" else torch.nn.ReLU()]
            prev = h
        head = torch.nn.Linear(prev, p["head.bias"].shape[0])
        put("head", head)
        return torch.nn.Sequential(*layers, head), named
    if kind == "cnn":
        layers = [torch.nn.Unflatten(1, tuple(arch["input_shape"]))]
        j = 0
        prev = arch["input_shape"][0]
        for ch in arch["channels"]:
            for _ in range(arch["convs_per_block"]):
                j += 1
                conv = torch.nn.Conv2d(prev, ch, 3, padding=1)
                put(f"conv{j}", conv)
                layers += [conv, torch.nn.ReLU()]
                prev = ch
            layers.append(torch.nn.MaxPool2d(2))
        head = torch.nn.Linear(p["head.weight"].shape[1], p["head.bias"].shape[0])
        put("head", head)
        return torch.nn.Sequential(*layers, torch.nn.Flatten(), head), named

    class Ref(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(model.n_classes, arch["embedding"])
            self.lstm = torch.nn.LSTM(
                arch["embedding"], arch["hidden"], arch["layers"], batch_first=True
            )
            self.head = torch.nn.Linear(arch["hidden"], model.n_classes)
            self.load_state_dict({k: v.clone() for k, v in p.items()})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(self.embed(x.long()))
            return self.head(out[:, -1])

    ref = Ref()
    return ref, dict(ref.named_parameters())


@pytest.mark.parametrize("kind", ["mlp", "cnn", "char_lstm"])
def test_per_sample_grads_match_nn_autograd(kind):
    model, X, y = small_model(kind)
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.int64)
    G = obj.per_sample_grads(theta, Xt, yt)
    assert G.shape == (len(y), obj.n_params) and G.dtype == torch.float32
    ref, names = _nn_reference(model)
    assert set(names) == set(obj.shapes)
    for i in range(len(y)):
        ref.zero_grad()
        logits = ref(Xt[i : i + 1])
        if logits.shape[1] == 1:  # pragma: no cover - 10 classes here
            raise AssertionError
        torch.nn.functional.cross_entropy(logits, yt[i : i + 1], reduction="sum").backward()
        g_ref = torch.cat([names[n].grad.reshape(-1) for n in obj.shapes])
        torch.testing.assert_close(G[i], g_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(obj.grad_sum(theta, Xt, yt), G.sum(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "char_lstm"])
def test_hvp_matches_finite_differences(kind):
    """∇²L v against central differences of ∇L (float64 copies of the parameters)."""
    model, X, y = small_model(kind)
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes).double()
    Xt = torch.as_tensor(X, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.int64)
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hv = obj.hvp(theta, Xt, yt, v)
    eps = 1e-5
    fd = (obj.gradient(theta + eps * v, Xt, yt) - obj.gradient(theta - eps * v, Xt, yt)) / (2 * eps)
    torch.testing.assert_close(hv, fd, rtol=1e-4, atol=1e-6)
    # Symmetry: uᵀ(Hv) = vᵀ(Hu).
    u = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hu = obj.hvp(theta, Xt, yt, u)
    assert abs(float(u @ hv) - float(v @ hu)) <= 1e-8 * (1 + abs(float(u @ hv)))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "char_lstm"])
def test_training_is_deterministic(kind):
    m1, _, _ = small_model(kind, seed=3)
    m2, _, _ = small_model(kind, seed=3)
    m3, _, _ = small_model(kind, seed=4)
    assert all(torch.equal(m1.params[k], m2.params[k]) for k in m1.params)
    assert not all(torch.equal(m1.params[k], m3.params[k]) for k in m1.params)
    assert all(t.dtype == torch.float32 for t in m1.params.values())


def test_training_metrics_and_options():
    X, y = digits(200)
    opts = TrainingOptions(l2=1.0, epochs=15, lr=1e-2, batch_size=32, seed=0)
    model, m = train({"kind": "mlp", "hidden": [16]}, X, y, 10, opts)
    for key in ("loss", "grad_norm", "train_accuracy", "epoch_losses", "steps", "wall_time_s"):
        assert key in m
    assert m["steps"] == 15 * 7 and len(m["epoch_losses"]) == 15
    assert m["epoch_losses"][-1] < m["epoch_losses"][0]
    assert m["train_accuracy"] >= 0.9
    # The reported loss is the SUM objective at the final parameters.
    obj = Objective.for_model(model)
    theta = flatten(model.params, obj.shapes)
    Xt, yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
    assert m["loss"] == pytest.approx(float(obj.value(theta, Xt, yt)), rel=1e-4)
    assert TrainingOptions.from_dict({"optimizer": "sgd", "lr": 0.05}).optimizer == "sgd"
    for bad in [{"optimizer": "rmsprop"}, {"epochs": 0}, {"lr": -1}, {"batch_size": 0}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainingOptions.from_dict(bad)
    _, m_sgd = train(
        {"kind": "mlp", "hidden": [16]}, X, y, 10, TrainingOptions(optimizer="sgd", lr=0.05)
    )
    assert m_sgd["train_accuracy"] >= 0.8


def test_lstm_forward_matches_nn_lstm_on_shorter_contexts():
    model, X, _ = small_model("char_lstm")
    ref, _ = _nn_reference(model)
    p = model.params
    for T in (1, 3, 6):
        x = torch.as_tensor(X[:, -T:], dtype=torch.float32)
        ours = CHAR_LSTM_SPEC.forward(model.architecture, p, x)
        torch.testing.assert_close(ours, ref(x), rtol=1e-5, atol=1e-6)


# --- text ---------------------------------------------------------------------------------


def test_windows_and_vocabulary():
    text = "abcabd"
    vocab = tx.build_vocabulary(text)
    assert vocab == "abcd"
    X, y = tx.windows(text, 3)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert [tx.decode(r, vocab) for r in X] == ["abc", "bca", "cab"]
    assert tx.decode(y, vocab) == "abd"
    X2, y2 = tx.windows(text, 2, stride=2)
    assert [tx.decode(r, vocab) for r in X2] == ["ab", "ca"] and tx.decode(y2, vocab) == "cb"
    with pytest.raises(ValueError, match="vocabulary"):
        tx.encode("abz", vocab)


def test_index_finds_every_occurrence():
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("ab c"), 3000))
    index = tx.TextIndex(text)
    # The suffix array is sorted.
    suffixes = [text[p:] for p in index.suffixes[:200]]
    assert suffixes == sorted(suffixes)
    for find in ["a", "ab", "aab", "c ca", "abcab", "zz", text[100:140]]:
        expected = [i for i in range(len(text)) if text.startswith(find, i)]
        assert index.occurrences(find).tolist() == expected
    # Non-overlapping matches are exactly those str.replace rewrites.
    t2 = "xaaaay aa"
    assert tx.TextIndex(t2).matches("aa").tolist() == [1, 3, 7]


@pytest.mark.parametrize("replace", ["0000", "not here", "", "9"])
def test_rectify_change_set_equals_windows_of_new_text(replace):
    rng = np.random.default_rng(1)
    vocab_chars = list("abcdefgh 0123456789notr")
    base = "".join(rng.choice(list("abcdefgh "), 400))
    secret = "0123"
    text = base[:50] + secret + base[50:200] + secret + base[200:] + secret
    vocab = tx.build_vocabulary("".join(vocab_chars))
    T = 5
    r = tx.rectify(text, secret, replace, window=T, vocabulary=vocab)
    assert r.text == text.replace(secret, replace)
    X, y = tx.windows(text, T, 1, vocab)
    assert r.occurrences.tolist() == [50, 204, len(text) - 4]
    # Z: exactly the old windows whose span [p, p+T] meets a secret character.
    spans = [set(range(p, p + T + 1)) for p in range(len(y))]
    secret_pos = {p + i for p in r.occurrences for i in range(4)}
    assert r.old_windows.tolist() == [i for i, s in enumerate(spans) if s & secret_pos]
    np.testing.assert_array_equal(r.Z_X, X[r.old_windows])
    # D' = (D \ Z) ∪ Z̃ = windows of the new text (as multisets of rows).
    Xn, yn = tx.windows(r.text, T, 1, vocab)
    np.testing.assert_array_equal(r.X_after, Xn)
    keep = np.setdiff1d(np.arange(len(y)), r.old_windows)
    lhs = sorted(map(tuple, np.column_stack([X[keep], y[keep]]).tolist()))
    lhs = sorted(lhs + list(map(tuple, np.column_stack([r.Zt_X, r.Zt_y]).tolist())))
    rhs = sorted(map(tuple, np.column_stack([Xn, yn]).tolist()))
    assert lhs == rhs
    if len(replace) == len(secret):
        np.testing.assert_array_equal(r.new_windows, r.old_windows)
    assert tx.affected_windows(text, secret, T).tolist() == r.old_windows.tolist()
    with pytest.raises(ValueError, match="vocabulary"):
        tx.rectify(text, secret, "XYZ", window=T, vocabulary=vocab)


def test_complete_and_log_perplexity_consistent():
    model, _, _ = small_model("char_lstm")
    obj = Objective.for_model(model)
    vocab = model.architecture["vocabulary"]
    prefix, cont = "the cat sat on the m", "at. "
    lp = tx.log_perplexity(model, prefix, cont)
    # Independent teacher forcing: one context at a time, last `window` characters.
    params = unflatten(flatten(model.params, obj.shapes), obj.shapes)
    total = 0.0
    full = prefix + cont
    for i in range(len(prefix), len(full)):
        ctx = tx.encode(full[max(0, i - 6) : i], vocab)
        logits = CHAR_LSTM_SPEC.forward(
            model.architecture, params, torch.tensor(ctx[None], dtype=torch.float32)
        )
        total -= float(torch.log_softmax(logits, 1)[0, vocab.index(full[i])]) / np.log(2)
    assert lp == pytest.approx(total, rel=1e-5)
    many = tx.log_perplexities(model, prefix, [cont, "at. ", "og. ", "a"])
    assert many[0] == pytest.approx(lp) and many[1] == pytest.approx(lp)
    out = tx.complete(model, prefix, 5)
    assert len(out) == 5 and set(out) <= set(vocab)
    assert tx.complete(model, prefix, 5) == out
    assert len(tx.complete(model, prefix, 5, greedy=False, seed=1)) == 5
