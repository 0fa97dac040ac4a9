"""Export a faceflow backbone as an InsightFace MXNet checkpoint: PREFIX-symbol.json + PREFIX-0000.params.

The symbol mirrors the backbone (fresnet IR units / fmobilefacenet, read off its parameter names and
shapes), keeps every BatchNorm's eps and momentum, takes raw 0..255 RGB `data` and normalises it inside
with faceflow's (x - 127.5) / 127.5, like InsightFace's symbols; the embedding is `fc1_output`.
`fc1` is a `fix_gamma=True` BatchNorm as in InsightFace; a trained gamma is folded into its statistics.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from faceflow.export.mxnet_runtime import mx
from faceflow.runtime.flow import nn

from faceflow.errors import FaceflowError
from faceflow.export.batchnorm_fold import unit_gamma_head
from faceflow.export.mxnet_names import batchnorm_layers, mxnet_param_map
from faceflow.export.mxnet_symbol import BatchNormSpec, iresnet_symbol, mobilefacenet_symbol
from faceflow.export.parity import Parity, compare, normalised_nchw, oneflow_embeddings, raw_nchw, require

EPOCH = 0
EMBEDDING_OUTPUT = "fc1_output"
_IRESNET_UNIT = re.compile(r"^stage(\d+)_unit(\d+)\.")
_MBF_BLOCK = re.compile(r"^res_(\d)\.block(\d+)\.")


def _bn_spec(model: nn.Module) -> BatchNormSpec:
    layers = batchnorm_layers(model)
    momenta = {round(1.0 - float(m.momentum), 6) for m in layers.values()}
    if len(momenta) != 1:
        raise FaceflowError(f"BatchNorm momentum differs between layers ({sorted(momenta)}); MXNet symbol needs one")
    return BatchNormSpec(momentum=momenta.pop(), eps={name: float(m.eps) for name, m in layers.items()})


def _dropout(model: nn.Module) -> float:
    dropout = getattr(model, "dropout", None)
    return float(dropout.p) if isinstance(dropout, nn.Dropout) else 0.0


def backbone_symbol(model: nn.Module, state: dict[str, np.ndarray]) -> mx.sym.Symbol:
    """The InsightFace symbol of this backbone (architecture read off its state-dict keys and shapes)."""
    bn = _bn_spec(model)
    embedding_size = int(state["pre_fc1.weight"].shape[0])
    if "conv0.weight" in state:
        units: dict[int, int] = {}
        for key in state:
            match = _IRESNET_UNIT.match(key)
            if match:
                stage, unit = int(match.group(1)), int(match.group(2))
                units[stage] = max(units.get(stage, 0), unit)
        return iresnet_symbol(tuple(units[s] for s in sorted(units)), embedding_size, bn, _dropout(model))
    if "conv_1.conv2d.weight" in state:
        blocks = {2: 1}
        for key in state:
            match = _MBF_BLOCK.match(key)
            if match:
                stage, block = int(match.group(1)), int(match.group(2))
                blocks[stage] = max(blocks.get(stage, 0), block + 1)
        c128 = int(state["dconv_23.conv_sep.conv2d.weight"].shape[0])
        trunk_scale = int(state["dconv_34.conv_proj.conv2d.weight"].shape[0]) // c128
        channels = (int(state["conv_1.conv2d.weight"].shape[0]) // trunk_scale, c128,
                    int(state["dconv_34.conv_sep.conv2d.weight"].shape[0]), int(state["conv_6sep.conv2d.weight"].shape[0]))
        stem = getattr(model, "conv_2_dw", None)
        stem_stride = 2 * int(stem.conv2d.stride[0]) if stem is not None else 2
        return mobilefacenet_symbol(embedding_size, bn, tuple(blocks[s] for s in (2, 3, 4, 5)), channels,
                                    stem_stride=stem_stride, trunk_scale=trunk_scale)
    raise FaceflowError("backbone is neither IResNet (conv0) nor MobileFaceNet (conv_1): no InsightFace symbol")


def mxnet_params(model: nn.Module) -> tuple[mx.sym.Symbol, dict[str, mx.nd.NDArray], dict[str, mx.nd.NDArray]]:
    """(symbol, arg_params, aux_params) of the backbone, shapes checked against the symbol."""
    model.eval()
    state = {key: value.detach().cpu().numpy().astype(np.float32) for key, value in model.state_dict().items()}
    unit_gamma_head(state, float(model.fc1.eps))
    symbol = backbone_symbol(model, state)
    args: dict[str, mx.nd.NDArray] = {}
    aux: dict[str, mx.nd.NDArray] = {}
    for key, param in mxnet_param_map(model).items():
        (args if param.kind == "arg" else aux)[param.name] = mx.nd.array(state[key], dtype="float32")
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, 112, 112))
    expected = {**dict(zip(symbol.list_arguments(), arg_shapes)),
                **dict(zip(symbol.list_auxiliary_states(), aux_shapes))}
    expected.pop("data")
    given = {**args, **aux}
    for name, shape in expected.items():
        if name not in given:
            raise FaceflowError(f"MXNet symbol needs parameter {name} that the backbone does not have")
        if tuple(given[name].shape) != tuple(shape):
            raise FaceflowError(f"parameter {name}: backbone shape {tuple(given[name].shape)} != symbol shape {shape}")
    unused = sorted(set(given) - set(expected))
    if unused:
        raise FaceflowError(f"backbone parameter {unused[0]} has no place in the MXNet symbol ({len(unused)} unused)")
    return symbol, args, aux


def export_mxnet(model: nn.Module, prefix: str | os.PathLike, images: np.ndarray) -> Parity:
    """Write PREFIX-symbol.json and PREFIX-0000.params, published (renamed) only if parity on `images` passes."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    symbol, args, aux = mxnet_params(model)
    symbol = symbol.get_internals()[EMBEDDING_OUTPUT]
    with tempfile.TemporaryDirectory(prefix=f".{prefix.name}.work-", dir=prefix.parent) as work:
        tmp_prefix = str(Path(work) / "model")
        mx.model.save_checkpoint(tmp_prefix, EPOCH, symbol, args, aux)
        parity = require(compare(oneflow_embeddings(model, normalised_nchw(images)),
                                 mxnet_embeddings(tmp_prefix, EPOCH, raw_nchw(images))), f"{prefix} (MXNet)")
        os.replace(f"{tmp_prefix}-{EPOCH:04d}.params", f"{prefix}-{EPOCH:04d}.params")
        os.replace(f"{tmp_prefix}-symbol.json", f"{prefix}-symbol.json")
    return parity


def mxnet_embeddings(prefix: str | os.PathLike, epoch: int, raw_batch: np.ndarray) -> np.ndarray:
    """Embeddings (`fc1_output`) of a raw 0..255 RGB NCHW batch from an MXNet checkpoint, via mx.mod.Module."""
    symbol, args, aux = mx.model.load_checkpoint(str(prefix), epoch)
    symbol = symbol.get_internals()[EMBEDDING_OUTPUT]
    module = mx.mod.Module(symbol=symbol, context=mx.cpu(), label_names=None)
    module.bind(data_shapes=[("data", raw_batch.shape)], for_training=False)
    module.set_params(args, aux, allow_missing=False, allow_extra=True)
    module.forward(mx.io.DataBatch(data=[mx.nd.array(raw_batch)]), is_train=False)
    return module.get_outputs()[0].asnumpy()
