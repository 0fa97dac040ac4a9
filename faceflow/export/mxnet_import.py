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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceflow.runtime.flow import flow, nn

from faceflow.checkpoint import write_checkpoint_dir
from faceflow.errors import FaceflowError
from faceflow.export.batchnorm_fold import fold_gamma, shift_eps
from faceflow.export.mxnet_export import EMBEDDING_OUTPUT, mxnet_embeddings
from faceflow.export.mxnet_names import batchnorm_layers, mxnet_param_map
from faceflow.export.mxnet_runtime import mx
from faceflow.export.parity import Parity, compare, normalised_nchw, oneflow_embeddings, raw_nchw, require

FACEFLOW_MEAN = 127.5
FACEFLOW_SCALE = 1.0 / 127.5
_SCALAR_OPS = {"_minus_scalar", "_plus_scalar", "_mul_scalar", "_div_scalar", "_copy", "identity"}
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


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
    # conv input = a * x + b with x = 127.5 * u + 127.5 (u: faceflow input) = 127.5 a u + (127.5 a + b)
    offset = FACEFLOW_MEAN * a + b
    if abs(offset) > 1e-4 * max(1.0, abs(b)):
        raise FaceflowError(f"{symbol_file}: input normalisation a*x+b with a={a:g}, b={b:g} does not subtract "
                            f"{FACEFLOW_MEAN}; it cannot be folded into faceflow's (x-127.5)/127.5 input")
    return a / FACEFLOW_SCALE, consumer


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
    state = {key: value.numpy() for key, value in model.state_dict().items()}
    for key, param in mapping.items():
        source = args if param.kind == "arg" else aux
        if param.name not in source:
            raise FaceflowError(f"{params_file}: network {network} needs {param.key} {tuple(state[key].shape)}, "
                                f"which the MXNet model lacks (is --network right?)")
        value = source[param.name].astype(np.float32)
        if value.shape != state[key].shape:
            raise FaceflowError(f"{params_file}: {param.key} has shape {value.shape} but network {network} with "
                                f"embedding_size {embedding_size} expects {tuple(state[key].shape)}")
        state[key] = value
    unused = sorted(needed - {p.name for p in mapping.values()})
    if unused:
        raise FaceflowError(f"{params_file}: parameter {unused[0]} has no place in network {network} "
                            f"({len(unused)} unused; is --network right?)")
    _absorb_batchnorm(model, state, facts, symbol_file)
    first = next(key for key, p in mapping.items() if p.name == facts.first_conv_weight)
    state[first] = state[first] * np.float32(facts.input_scale)
    model.load_state_dict({k: flow.tensor(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})
    config = {"network": network, "embedding_size": int(embedding_size),
              "imported_from": f"{prefix}-{epoch:04d}.params"}
    return model, config


def _absorb_batchnorm(model: nn.Module, state: dict[str, np.ndarray], facts: SymbolFacts, symbol_file: Path) -> None:
    prefixes = {path.replace(".", "_"): path for path, _ in model.named_modules()}
    for layer, module in batchnorm_layers(model).items():
        if layer not in facts.bn_eps:
            raise FaceflowError(f"{symbol_file}: no BatchNorm node named {layer}")
        path = prefixes[layer]
        gamma_key, var_key = f"{path}.weight", f"{path}.running_var"
        if facts.bn_fix_gamma[layer]:
            state[gamma_key] = np.ones_like(state[gamma_key])
        state[var_key] = shift_eps(state[var_key], facts.bn_eps[layer], float(module.eps))
    fc1_gamma_fixed = not model.fc1.weight.requires_grad
    if fc1_gamma_fixed and not np.allclose(state["fc1.weight"], 1.0, rtol=0, atol=1e-7):
        folded = fold_gamma(state["fc1.weight"], state["fc1.running_mean"], state["fc1.running_var"],
                            float(model.fc1.eps), "fc1")
        state["fc1.weight"] = np.ones_like(state["fc1.weight"])
        state["fc1.running_mean"], state["fc1.running_var"] = folded.mean, folded.var
        state["pre_fc1.weight"] = state["pre_fc1.weight"] * folded.sign[:, None]
        state["pre_fc1.bias"] = state["pre_fc1.bias"] * folded.sign


def write_imported_checkpoint(model: nn.Module, config: dict[str, Any], out: str | os.PathLike,
                              state: dict[str, Any]) -> Path:
    """Write `model` as the faceflow checkpoint directory `out` (atomically, through `write_checkpoint_dir`)."""
    out = Path(out)
    match = _STEP_DIR.match(out.name)
    step = int(match.group(1)) if match else 0
    return write_checkpoint_dir(out, step, config, state,
                                lambda tmp: flow.save(model.state_dict(), str(tmp / "backbone")))


def import_mxnet_checkpoint(prefix: str | os.PathLike, epoch: int, network: str, out: str | os.PathLike,
                            images: np.ndarray, embedding_size: int | None = None) -> Parity:
    """Import, check the embeddings against MXNet's own on `images`, then write the checkpoint `out`."""
    model, config = import_mxnet(prefix, epoch, network, embedding_size)
    parity = require(compare(mxnet_embeddings(prefix, epoch, raw_nchw(images)),
                             oneflow_embeddings(model, normalised_nchw(images))), f"{out} (import of {prefix})")
    write_imported_checkpoint(model, config, out, {"epoch": int(epoch), "world_size": 1,
                                                   "imported": parity.as_dict()})
    return parity
