"""Backbone weights to start a fine-tune from (`pretrained: PATH`): a faceflow checkpoint directory, an
arcface_torch `.pth`/`.pt`, an ONNX model or an InsightFace MXNet prefix, told apart by what PATH is.

The run's own network, embedding size and network_kwargs must be the file's; a mismatch is a one-line
error naming `pretrained` and the setting to change. ONNX and MXNet files are checked against their own
runtime's embeddings on a few drawn faces, like `faceflow import`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceflow.errors import ConfigError
from faceflow.export.model_files import model_format, mxnet_epoch

PARITY_FACES = 2


@dataclass(frozen=True)
class Pretrained:
    """Backbone tensors (faceflow state-dict keys, NumPy) and a line saying what they are and where from."""

    state: dict[str, np.ndarray]
    description: str


def _setting(config: dict[str, Any], key: str) -> Any:
    value = config.get(key)
    return (value or {}) if key == "network_kwargs" else value


def _require_same(path: str, found: dict[str, Any], config: dict[str, Any]) -> None:
    for key in ("network", "embedding_size", "network_kwargs"):
        ours, theirs = _setting(config, key), _setting(found, key)
        if ours != theirs:
            raise ConfigError(f"pretrained: {path} holds {key} {theirs!r} but the run has {ours!r}; "
                              f"set {key}: {theirs!r} to fine-tune from it")


def load_pretrained(path: str, config: dict[str, Any]) -> Pretrained:
    """The backbone tensors of `path` for the run `config` (network, embedding_size, network_kwargs)."""
    from faceflow.export.imported_state import model_state
    from faceflow.export.parity import compare, drawn_faces, normalised_nchw, oneflow_embeddings, raw_nchw, require

    kind = model_format(path, "pretrained")
    network, kwargs = config["network"], dict(config.get("network_kwargs") or {})
    check = None
    if kind == "faceflow":
        from faceflow.runtime.flow import flow

        from faceflow.checkpoint import read_checkpoint_meta

        found, meta = read_checkpoint_meta(path)
        _require_same(path, found, config)
        state = {k: v.numpy() for k, v in flow.load(str(Path(path) / "backbone")).items()}
        return Pretrained(state, f"faceflow checkpoint {path} (step {meta.get('step')})")
    if kind == "torch":
        from faceflow.export.torch_import import import_torch

        model, found = import_torch(path, network)
        what = "arcface_torch state dict"
    elif kind == "onnx":
        from faceflow.export.onnx_import import import_onnx, onnxruntime_embeddings

        model, found, graph = import_onnx(path, network, network_kwargs=kwargs or None)
        what = "ONNX model"
        check = lambda faces: onnxruntime_embeddings(path, faces, graph.affine is not None)  # noqa: E731
    else:
        from faceflow.export.mxnet_export import mxnet_embeddings
        from faceflow.export.mxnet_import import import_mxnet

        prefix, epoch = mxnet_epoch(path)
        model, found = import_mxnet(prefix, epoch, network)
        what = f"MXNet model (epoch {epoch})"
        check = lambda faces: mxnet_embeddings(prefix, epoch, raw_nchw(faces))  # noqa: E731
    _require_same(path, found, config)
    note = ""
    if check is not None:
        faces = drawn_faces(PARITY_FACES)
        parity = require(compare(check(faces), oneflow_embeddings(model, normalised_nchw(faces))),
                         f"pretrained: {path}")
        note = f", embeddings match its runtime's (min cosine {parity.min_cosine:.6f})"
    return Pretrained(model_state(model), f"{what} {path}{note}")
