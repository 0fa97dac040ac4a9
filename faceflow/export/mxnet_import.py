"""Import an InsightFace MXNet model (fresnet IR / fmobilefacenet; PREFIX-symbol.json + PREFIX-EPOCH.params).

Parameters are matched by name (see `mxnet_names`); BatchNorm eps and `fix_gamma` are read from the
symbol and absorbed into the running statistics, and the symbol's input normalisation (InsightFace's
`(x - 127.5) * 0.0078125`) is folded into the first convolution, so the faceflow backbone fed
`(x - 127.5) / 127.5` gives the MXNet model's embeddings. A symbol without scalar ops before its first
convolution is taken to expect faceflow's normalised input already.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceflow.runtime.flow import nn

from faceflow.errors import FaceflowError
from faceflow.export.imported_state import conform_batchnorm, fill_state, input_scale, load_state, write_checked_import
from faceflow.export.mxnet_export import EMBEDDING_OUTPUT, mxnet_embeddings
from faceflow.export.mxnet_names import batchnorm_layers, mxnet_param_map
from faceflow.export.mxnet_runtime import mx
from faceflow.export.parity import Parity, raw_nchw

_SCALAR_OPS = {"_minus_scalar", "_plus_scalar", "_mul_scalar", "_div_scalar", "_copy", "identity"}


@dataclass(frozen=True)
class SymbolFacts:
    """What the importer needs from an MXNet symbol JSON."""

    bn_eps: dict[str, float]
    bn_fix_gamma: dict[str, bool]
    first_conv_weight: str
    input_scale: float  # conv input = input_scale * faceflow input


def _attrs(node: dict[str, Any]) -> dict[str, str]:
    return node.get("attrs") or node.get("attr") or node.get("param") or {}


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1")


def _input_scale(nodes: list[dict[str, Any]], symbol_file: Path) -> tuple[float, int]:
    """Follow the scalar ops after `data`; return (scale relative to faceflow's input, index of next node)."""
    current = next((i for i, n in enumerate(nodes) if n["op"] == "null" and n["name"] == "data"), None)
    if current is None:
        raise FaceflowError(f"{symbol_file}: no input variable named 'data'")
    a, b, steps = 1.0, 0.0, 0
    while True:
        consumer = next((i for i, n in enumerate(nodes) if n["inputs"] and n["inputs"][0][0] == current), None)
        if consumer is None or nodes[consumer]["op"] not in _SCALAR_OPS:
            break
        op, scalar = nodes[consumer]["op"], float(_attrs(nodes[consumer]).get("scalar", "0"))
        if op == "_minus_scalar":
            b -= scalar
        elif op == "_plus_scalar":
            b += scalar
        elif op == "_mul_scalar":
            a, b = a * scalar, b * scalar
        elif op == "_div_scalar":
            a, b = a / scalar, b / scalar
        current, steps = consumer, steps + (op not in ("_copy", "identity"))
    if steps == 0:
        return 1.0, consumer
    return input_scale(a, b, str(symbol_file)), consumer


def read_symbol_facts(symbol_file: Path) -> SymbolFacts:
    """BatchNorm eps/fix_gamma per layer (MXNet defaults 1e-3/True), first conv, input normalisation."""
    try:
        nodes = json.loads(symbol_file.read_text())["nodes"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FaceflowError(f"{symbol_file}: not an MXNet symbol JSON ({err})") from None
    bn_eps, fix_gamma = {}, {}
    for node in nodes:
        if node["op"] == "BatchNorm":
            attrs = _attrs(node)
            bn_eps[node["name"]] = float(attrs.get("eps", "0.001"))
            fix_gamma[node["name"]] = _is_true(attrs.get("fix_gamma", "True"))
    scale, first = _input_scale(nodes, symbol_file)
    if first is None or nodes[first]["op"] != "Convolution":
        raise FaceflowError(f"{symbol_file}: expected a Convolution right after the input normalisation")
    weight = nodes[nodes[first]["inputs"][1][0]]["name"]
    return SymbolFacts(bn_eps, fix_gamma, weight, scale)


def load_mxnet(prefix: str | os.PathLike, epoch: int) -> tuple[Path, Path, Any, dict, dict]:
    """(symbol file, params file, symbol, arg_params as numpy, aux_params as numpy); clear errors if absent."""
    symbol_file, params_file = Path(f"{prefix}-symbol.json"), Path(f"{prefix}-{epoch:04d}.params")
    for path in (symbol_file, params_file):
        if not path.is_file():
            raise FaceflowError(f"{path}: no such file (MXNet checkpoint prefix {prefix}, epoch {epoch})")
    try:
        symbol, args, aux = mx.model.load_checkpoint(str(prefix), epoch)
    except Exception as err:  # MXNet raises MXNetError / ValueError on corrupt files
        raise FaceflowError(f"{params_file}: cannot load MXNet checkpoint: {err}") from None
    return (symbol_file, params_file, symbol,
            {k: v.asnumpy() for k, v in args.items()}, {k: v.asnumpy() for k, v in aux.items()})


def _embedding_params(symbol, symbol_file: Path) -> set[str]:
    try:
        embedding = symbol.get_internals()[EMBEDDING_OUTPUT]
    except Exception:
        raise FaceflowError(f"{symbol_file}: no {EMBEDDING_OUTPUT} output (not an InsightFace recognition model)") from None
    return (set(embedding.list_arguments()) | set(embedding.list_auxiliary_states())) - {"data"}


def import_mxnet(prefix: str | os.PathLike, epoch: int, network: str,
                 embedding_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build faceflow backbone `network` holding the MXNet model's weights; return (module in eval mode, config)."""
    from faceflow.models import build_backbone

    symbol_file, params_file, symbol, args, aux = load_mxnet(prefix, epoch)
    facts = read_symbol_facts(symbol_file)
    if embedding_size is None:
        if "pre_fc1_weight" not in args:
            raise FaceflowError(f"{params_file}: no arg:pre_fc1_weight to read the embedding size from; pass --embedding-size")
        embedding_size = int(args["pre_fc1_weight"].shape[0])
    model = build_backbone(network, embedding_size=embedding_size)
    model.eval()
    mapping = mxnet_param_map(model)
    needed = _embedding_params(symbol, symbol_file)
    source = {f"{kind}:{name}": values[name] for kind, values in (("arg", args), ("aux", aux))
              for name in values if name in needed}
    state = fill_state(model, network, {key: param.key for key, param in mapping.items()}, source, str(params_file))
    missing = sorted(layer for layer in batchnorm_layers(model) if layer not in facts.bn_eps)
    if missing:
        raise FaceflowError(f"{symbol_file}: no BatchNorm node named {missing[0]}")
    for key, param in mapping.items():
        if key.endswith(".weight") and facts.bn_fix_gamma.get(param.layer):
            state[key] = np.ones_like(state[key])
    conform_batchnorm(model, state, lambda path: facts.bn_eps[path.replace(".", "_")])
    first = next(key for key, p in mapping.items() if p.name == facts.first_conv_weight)
    state[first] = state[first] * np.float32(facts.input_scale)
    load_state(model, state)
    config = {"network": network, "embedding_size": int(embedding_size),
              "imported_from": f"{prefix}-{epoch:04d}.params"}
    return model, config


def import_mxnet_checkpoint(prefix: str | os.PathLike, epoch: int, network: str, out: str | os.PathLike,
                            images: np.ndarray, embedding_size: int | None = None) -> Parity:
    """Import, check the embeddings against MXNet's own on `images`, then write the checkpoint `out`."""
    model, config = import_mxnet(prefix, epoch, network, embedding_size)
    return write_checked_import(model, config, out, images,
                                lambda batch: mxnet_embeddings(prefix, epoch, raw_nchw(batch)), {"epoch": int(epoch)})
