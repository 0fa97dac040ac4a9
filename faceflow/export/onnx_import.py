"""Import an ONNX recognition model (InsightFace model-zoo `w600k_r50.onnx`, `glintr100.onnx`, graphs that
arcface_torch's torch2onnx.py writes) as a faceflow backbone, matching weights to layers by graph structure.

`onnx_graph` lists the graph's layers in execution order; they are paired with the faceflow backbone's
Conv/BatchNorm/PReLU/Linear modules in theirs, checking kind, shape, stride and groups at each step. A
BatchNorm that the exporter folded into the Conv or Gemm before it becomes an identity BatchNorm (the Conv's
bias moves into its shift). A normalisation inside the graph (scalar Sub/Mul on the input) is folded into
the first convolution. The embeddings are then checked against onnxruntime on the original file.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from faceflow.runtime.flow import nn

from faceflow.errors import FaceflowError
from faceflow.export.imported_state import conform_batchnorm, fill_state, input_scale, load_state, write_checked_import
from faceflow.export.mxnet_names import BATCHNORM_TYPES
from faceflow.export.onnx_graph import GraphLayers, Layer, graph_layers, load_graph
from faceflow.export.parity import Parity, normalised_nchw, raw_nchw

_FOLDED_EPS = 0.0  # an identity BN standing in for a folded one: var 1, eps 0


def _modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for path, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.PReLU, *BATCHNORM_TYPES)):
            yield path, module


def suggest_network(layers: list[Layer]) -> str | None:
    """The faceflow network whose layer list this graph's has: IResNet by its count of 3x3 convolutions
    (1 + 2 per unit), MobileFaceNet by its 7x7 depthwise GDC convolution."""
    from faceflow.models.iresnet import UNITS

    convs = [layer for layer in layers if layer.kind == "conv"]
    if any(c.attrs["kernel"] == (7, 7) and c.attrs["groups"] > 1 for c in convs):
        return "mbf"
    threes = sum(1 for c in convs if c.attrs["kernel"] == (3, 3))
    return next((name for name, units in UNITS.items() if 1 + 2 * sum(units) == threes), None)


def _hint(graph: GraphLayers, network: str) -> str:
    suggestion = suggest_network(graph.layers)
    if suggestion and suggestion != network:
        return f"the graph's layers are those of {suggestion}: use --network {suggestion}"
    return "is --network right?"


def _pair(model: nn.Module, graph: GraphLayers, network: str, where: str) -> tuple[dict[str, str], dict[str, np.ndarray],
                                                                                    dict[str, float]]:
    """(faceflow key -> source key, source tensors, BN path -> eps) from walking both layer lists together."""
    hint = _hint(graph, network)
    layers = list(graph.layers)
    expected: dict[str, str] = {}
    source: dict[str, np.ndarray] = {}
    eps: dict[str, float] = {}
    position, previous, pending_bias = 0, None, None

    def take(path: str, tensor: str, layer: Layer, name: str) -> None:
        expected[f"{path}.{tensor}"] = f"{layer.node}:{name}"
        source[f"{layer.node}:{name}"] = layer.tensors[name]

    for path, module in _modules(model):
        layer = layers[position] if position < len(layers) else None
        follows_weight = previous is not None and previous.kind in ("conv", "linear")
        if isinstance(module, BATCHNORM_TYPES):
            if layer is not None and layer.kind == "bn" and (not follows_weight or layer.source == previous.output):
                for tensor, name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"),
                                     ("running_var", "var")):
                    take(path, tensor, layer, name)
                if pending_bias is not None:  # a Conv bias ahead of a kept BN shifts its mean
                    source[f"{layer.node}:mean"] = layer.tensors["mean"] - pending_bias
                eps[path], pending_bias, previous, position = layer.attrs["eps"], None, layer, position + 1
                continue
            if not follows_weight:
                got = f"node {layer.node} ({layer.kind})" if layer else "the end of the graph"
                raise FaceflowError(f"{where}: faceflow layer {path} (BatchNorm) meets {got} ({hint})")
            channels = int(module.num_features)
            folded = Layer("bn", f"{previous.node}(folded BatchNorm)", {
                "gamma": np.ones(channels, np.float32), "mean": np.zeros(channels, np.float32),
                "var": np.ones(channels, np.float32),
                "beta": pending_bias if pending_bias is not None else np.zeros(channels, np.float32)})
            for tensor, name in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"),
                                 ("running_var", "var")):
                take(path, tensor, folded, name)
            eps[path], pending_bias, previous = _FOLDED_EPS, None, folded
            continue
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear" if isinstance(module, nn.Linear) else "prelu"
        if layer is None or layer.kind != kind:
            got = f"node {layer.node} ({layer.kind})" if layer else "the end of the graph"
            raise FaceflowError(f"{where}: faceflow layer {path} ({kind}) meets {got} ({hint})")
        if kind == "conv":
            _check_conv(module, layer, path, where, hint)
            take(path, "weight", layer, "weight")
            pending_bias = layer.tensors.get("bias")
        elif kind == "linear":
            layer.tensors.setdefault("bias", np.zeros(layer.tensors["weight"].shape[0], np.float32))
            take(path, "weight", layer, "weight")
            take(path, "bias", layer, "bias")
        else:
            take(path, "weight", layer, "slope")
        previous, position = layer, position + 1
    if position < len(layers):
        raise FaceflowError(f"{where}: node {layers[position].node} ({layers[position].kind}) has no place in "
                            f"network {network} ({len(layers) - position} layers left over; {hint})")
    return expected, source, eps


def _check_conv(module: nn.Conv2d, layer: Layer, path: str, where: str, hint: str) -> None:
    ours = {"stride": tuple(int(s) for s in module.stride), "groups": int(module.groups),
            "pads": tuple(int(p) for p in module.padding) * 2, "dilations": tuple(int(d) for d in module.dilation)}
    for name, value in ours.items():
        if tuple(np.atleast_1d(layer.attrs[name]).tolist()) != tuple(np.atleast_1d(value).tolist()):
            raise FaceflowError(f"{where}: node {layer.node}: {name} {layer.attrs[name]} but faceflow layer {path} "
                                f"has {value} ({hint})")


def import_onnx(path: str | os.PathLike, network: str, embedding_size: int | None = None,
                network_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any], GraphLayers]:
    """Build faceflow backbone `network` holding the graph's weights; return (module in eval mode, config, graph)."""
    from faceflow.models import build_backbone

    where = str(path)
    graph = graph_layers(load_graph(path), where)
    linears = [layer for layer in graph.layers if layer.kind == "linear"]
    if embedding_size is None:
        if not linears:
            raise FaceflowError(f"{where}: no Gemm/MatMul to read the embedding size from; pass --embedding-size")
        embedding_size = int(linears[-1].tensors["weight"].shape[0])
    kwargs = dict(network_kwargs or {})
    first = next((layer for layer in graph.layers if layer.kind == "conv"), None)
    if network == "mbf" and first is not None and "trunk_scale" not in kwargs:
        kwargs["trunk_scale"] = max(1, int(first.tensors["weight"].shape[0]) // 64)
    model = build_backbone(network, embedding_size=embedding_size, **kwargs)
    expected, source, eps = _pair(model, graph, network, where)
    state = fill_state(model, network, expected, source, where, _hint(graph, network))
    conform_batchnorm(model, state, lambda module_path: eps[module_path])
    if graph.affine is not None:
        first_key = next(f"{p}.weight" for p, m in _modules(model) if isinstance(m, nn.Conv2d))
        state[first_key] = state[first_key] * np.float32(input_scale(*graph.affine, where))
    load_state(model, state)
    config: dict[str, Any] = {"network": network, "embedding_size": int(embedding_size)}
    if kwargs:
        config["network_kwargs"] = kwargs
    config["imported_from"] = where
    return model, config, graph


def onnxruntime_embeddings(path: str | os.PathLike, images: np.ndarray, raw_input: bool) -> np.ndarray:
    """Embeddings of RGB uint8 images from the ONNX file run by onnxruntime (raw 0..255 input when the graph
    normalises inside, else (x-127.5)/127.5); a fixed batch size is fed in chunks of that size."""
    import onnxruntime as ort

    batch = raw_nchw(images) if raw_input else normalised_nchw(images)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        fixed = feed.shape[0] if isinstance(feed.shape[0], int) and feed.shape[0] > 0 else len(batch)
        outputs = []
        for begin in range(0, len(batch), fixed):
            chunk = batch[begin:begin + fixed]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - len(chunk), axis=0)])
            outputs.append(session.run(None, {feed.name: padded})[0][:len(chunk)])
    except Exception as err:  # onnxruntime errors are not a stable type
        raise FaceflowError(f"{path}: onnxruntime cannot run the model: {err}") from None
    return np.concatenate(outputs).reshape(len(batch), -1)


def import_onnx_checkpoint(path: str | os.PathLike, network: str, out: str | os.PathLike, images: np.ndarray,
                           embedding_size: int | None = None) -> Parity:
    """Import, check the embeddings against onnxruntime's on the original file, then write the checkpoint `out`."""
    model, config, graph = import_onnx(path, network, embedding_size)
    return write_checked_import(model, config, out, images,
                                lambda batch: onnxruntime_embeddings(path, batch, graph.affine is not None),
                                {"epoch": 0})
