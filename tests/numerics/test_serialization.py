"""safetensors round trip, malformed input, architecture validation, predict/evaluate."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save

from unlearning import (
    TrainingOptions,
    evaluate,
    model_from_safetensors,
    model_to_safetensors,
    predict_proba,
    train,
    validate_architecture,
)

ARCH = {"kind": "logistic_regression"}


@pytest.fixture(scope="module", params=[2, 3])
def model_and_data(request):
    k = request.param
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 5))
    y = rng.integers(0, k, 80)
    model, _ = train(ARCH, X, y, k, TrainingOptions(l2=0.3, seed=4))
    return model, X, y


def test_round_trip(model_and_data):
    model, X, _ = model_and_data
    data = model_to_safetensors(model)
    assert isinstance(data, bytes) and data == model_to_safetensors(model)
    back = model_from_safetensors(data)
    assert back.architecture == model.architecture and back.training == model.training
    assert (back.n_features, back.n_classes, back.l2) == (
        model.n_features,
        model.n_classes,
        model.l2,
    )
    for name, t in model.params.items():
        assert torch.equal(back.params[name], t)
    np.testing.assert_array_equal(predict_proba(back, X), predict_proba(model, X))


def test_malformed_inputs(model_and_data):
    model, _, _ = model_and_data
    good = model_to_safetensors(model)
    for garbage in [b"", b"garbage", b"\xff" * 64, good[:20], good[:-4], 12345]:
        with pytest.raises(ValueError):
            model_from_safetensors(garbage)
    no_meta = save({"weight": torch.zeros(1, 5, dtype=torch.float64)})
    with pytest.raises(ValueError, match="metadata"):
        model_from_safetensors(no_meta)
    meta = {
        "format": "unlearnd.model",
        "format_version": "1",
        "architecture": json.dumps(ARCH),
        "n_features": "5",
        "n_classes": "2",
        "l2": "0.3",
        "training": "{}",
    }
    wrong_shape = save(
        {
            "weight": torch.zeros(1, 4, dtype=torch.float64),
            "bias": torch.zeros(1, dtype=torch.float64),
        },
        metadata=meta,
    )
    with pytest.raises(ValueError, match="shape"):
        model_from_safetensors(wrong_shape)
    bad_arch = save(
        {
            "weight": torch.zeros(1, 5, dtype=torch.float64),
            "bias": torch.zeros(1, dtype=torch.float64),
        },
        metadata={**meta, "architecture": '{"kind": "transformer"}'},
    )
    with pytest.raises(ValueError, match="not supported yet"):
        model_from_safetensors(bad_arch)


def test_validate_architecture():
    assert validate_architecture({"kind": "logistic_regression"}) == ARCH
    for kind in ["transformer", "gpt"]:
        with pytest.raises(ValueError, match=f"kind '{kind}' is not supported yet; supported: "):
            validate_architecture({"kind": kind})
    for bad in [{}, {"kind": 3}, "logistic_regression", None]:
        with pytest.raises(ValueError, match="kind"):
            validate_architecture(bad)
    with pytest.raises(ValueError, match="hidden"):
        validate_architecture({"kind": "logistic_regression", "hidden": [3]})


def test_predict_and_evaluate(model_and_data):
    model, X, y = model_and_data
    P = predict_proba(model, X)
    assert P.shape == (80, model.n_classes)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    ev = evaluate(model, X, y)
    ref_loss = -np.mean(np.log(P[np.arange(80), y]))
    assert ev["loss"] == pytest.approx(ref_loss, rel=1e-10)
    assert ev["accuracy"] == pytest.approx(np.mean(P.argmax(1) == y))
    with pytest.raises(ValueError):
        evaluate(model, X[:, :3], y)


def test_output_is_standard_safetensors(model_and_data):
    from safetensors.torch import load

    model, _, _ = model_and_data
    data = model_to_safetensors(model)
    tensors = load(data)
    assert set(tensors) == {"weight", "bias"}
    for name, t in model.params.items():
        assert torch.equal(tensors[name], t)
