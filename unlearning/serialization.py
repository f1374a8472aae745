"""safetensors (never pickle) serialisation of :class:`TrainedModel`.

The file holds the parameter tensors under their names and string metadata:
``format`` = "unlearnd.model", ``format_version`` = "1", and JSON strings ``architecture``,
``n_features``, ``n_classes``, ``l2``, ``training``.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import torch
from safetensors.torch import load as st_load

from .architectures import param_shapes, validate_architecture
from .model import TrainedModel

FORMAT = "unlearnd.model"
FORMAT_VERSION = "1"


_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def model_to_safetensors(model: TrainedModel) -> bytes:
    """Serialise weights and metadata to safetensors bytes.

    Byte-for-byte deterministic (sorted header keys, tensors in name order), so a sha256 of the
    result identifies the model.
    """
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": json.dumps(model.architecture, sort_keys=True),
        "n_features": json.dumps(int(model.n_features)),
        "n_classes": json.dumps(int(model.n_classes)),
        "l2": json.dumps(float(model.l2)),
        "training": json.dumps(model.training, sort_keys=True),
    }
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name in sorted(model.params):
        t = model.params[name].detach().to("cpu").contiguous()
        if t.dtype not in _DTYPES:
            raise ValueError(f"tensor '{name}' has unsupported dtype {t.dtype}")
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        blob = raw.numpy().astype(raw.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _read_metadata(data: bytes) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError("not a safetensors file: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("not a safetensors file: header length exceeds the data")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a safetensors file: header is not JSON") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise ValueError("safetensors file has no unlearnd metadata")
    return meta


def _field(meta: dict[str, str], key: str) -> Any:
    if key not in meta:
        raise ValueError(f"model file metadata lacks '{key}'")
    try:
        return json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model file metadata '{key}' is not valid JSON") from exc


def model_from_safetensors(data: bytes) -> TrainedModel:
    """Inverse of :func:`model_to_safetensors`; ValueError on malformed or inconsistent input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError("model data must be bytes")
    data = bytes(data)
    meta = _read_metadata(data)
    if meta.get("format") != FORMAT:
        raise ValueError(f"not an unlearnd model file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported model format version {meta.get('format_version')!r}")
    arch = validate_architecture(_field(meta, "architecture"))
    n_features, n_classes = _field(meta, "n_features"), _field(meta, "n_classes")
    l2, training = _field(meta, "l2"), _field(meta, "training")
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not math.isfinite(l2) or l2 < 0:
        raise ValueError(f"model file has an invalid l2 {l2!r}")
    if not isinstance(training, dict):
        raise ValueError("model file metadata 'training' must be a JSON object")
    shapes = param_shapes(arch, n_features, n_classes)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"corrupt safetensors data: {exc}") from exc
    if set(tensors) != set(shapes):
        raise ValueError(f"model file has tensors {sorted(tensors)}, expected {sorted(shapes)}")
    params: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        t = tensors[name]
        if tuple(t.shape) != shape:
            raise ValueError(f"tensor '{name}' has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            raise ValueError(f"tensor '{name}' must hold finite floating-point values")
        params[name] = t.contiguous()
    return TrainedModel(arch, params, int(n_features), int(n_classes), float(l2), training)
