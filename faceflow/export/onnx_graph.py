"""The layers of an ONNX recognition graph in execution order, found by walking its data flow, not its names.

Constants (initializers, `Constant` nodes and what Identity/Unsqueeze/Squeeze/Reshape make of them) are
evaluated first; data ops that only reshape (Identity, Flatten, Reshape, Dropout, Squeeze, Unsqueeze) are
seen through; scalar Sub/Add/Mul/Div right after the input are read as an input normalisation `a*x + b`.
What remains are layers (Conv, BatchNormalization, PRelu, Gemm or MatMul + bias Add) and residual Adds.
They are ordered depth first from the input, and where a tensor feeds several branches the longer branch
(more layers before the graphs meet again) comes first: the main path of a residual block before its
shortcut, which is the order faceflow's backbones register their modules in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from faceflow.errors import DataFormatError

_VIEW_OPS = {"Identity", "Flatten", "Reshape", "Dropout", "Squeeze", "Unsqueeze"}
_AFFINE_OPS = {"Sub", "Add", "Mul", "Div"}
_LAYER_OPS = {"Conv", "BatchNormalization", "PRelu", "Gemm", "MatMul"}


@dataclass
class Layer:
    """One parametric layer: `kind` conv | bn | prelu | linear, its ONNX node name, tensors and attributes.

    conv: weight (O x I/g x k x k), bias?; bn: gamma, beta, mean, var, eps; prelu: slope (C);
    linear: weight (out x in), bias?. `source` is the data tensor it reads (after views), `output` its own.
    """

    kind: str
    node: str
    tensors: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    output: str = ""


@dataclass
class GraphLayers:
    """What the importer needs from the graph: layers in order, the input normalisation and the input."""

    layers: list[Layer]
    input_name: str
    affine: tuple[float, float] | None  # x -> a*x + b applied before the first layer, or None


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _fold_constant(node: onnx.NodeProto, values: list[np.ndarray], attrs: dict[str, Any]) -> np.ndarray | None:
    if node.op_type == "Identity":
        return values[0]
    if node.op_type in ("Unsqueeze", "Squeeze"):
        axes = attrs.get("axes", values[1].tolist() if len(values) > 1 else None)
        if node.op_type == "Squeeze":
            return np.squeeze(values[0], axis=tuple(axes) if axes is not None else None)
        out = values[0]
        for axis in sorted(a % (out.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, axis)
        return out
    if node.op_type == "Reshape":
        return values[0].reshape([d if d != 0 else values[0].shape[i] for i, d in enumerate(values[1].tolist())])
    return None


def load_graph(path: str | os.PathLike) -> onnx.ModelProto:
    """The ONNX model at `path` (weights inside the file: external data is refused, nothing outside is read)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise DataFormatError(f"{path}: not an ONNX model ({type(err).__name__}: {err})") from None
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise DataFormatError(f"{path}: initializer {tensor.name} keeps its data in an external file; "
                                  f"save the model with the weights inside")
    return model


def graph_layers(model: onnx.ModelProto, where: str) -> GraphLayers:
    """Walk `model`'s graph into its layers in execution order (see the module docstring)."""
    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise DataFormatError(f"{where}: expected one data input, found {len(inputs)} ({', '.join(inputs)})")
    alias: dict[str, str] = {}
    shapes: set[str] = set()  # tensors computed from a Shape (they only feed Reshape's shape input)
    data_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = _attributes(node)
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(attrs["value"])
            continue
        present = [name for name in node.input if name]
        if node.op_type == "Shape" or (present and all(n in consts or n in shapes for n in present)
                                       and any(n in shapes for n in present)):
            shapes.update(node.output)
            continue
        if present and all(name in consts for name in present):
            folded = _fold_constant(node, [consts[n] for n in present], attrs)
            if folded is None:
                raise DataFormatError(f"{where}: node {node.name or node.op_type} ({node.op_type}) computes on "
                                      f"constants only; such graphs are not read")
            consts[node.output[0]] = folded
            continue
        if node.op_type in _VIEW_OPS:
            alias[node.output[0]] = node.input[0]
            continue
        data_nodes.append(node)

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    start = inputs[0]
    affine = _input_affine(data_nodes, start, consts, resolve, alias)
    items: list[Layer] = []
    for node in data_nodes:
        if node.output[0] not in alias:
            items.append(_layer(node, consts, resolve, where))
    ordered = _order(items, start, where)
    return GraphLayers([layer for layer in ordered if layer.kind != "merge"], start, affine)


def _input_affine(nodes: list[onnx.NodeProto], data: str, consts: dict[str, np.ndarray], resolve,
                  alias: dict[str, str]) -> tuple[float, float] | None:
    """Fold scalar Sub/Add/Mul/Div right after the input `data` into (a, b); their outputs become `data`."""
    a, b, found = 1.0, 0.0, False
    while True:
        consumers = [n for n in nodes if n.output[0] not in alias and any(resolve(i) == data for i in n.input if i)]
        if len(consumers) != 1 or consumers[0].op_type not in _AFFINE_OPS:
            break
        node = consumers[0]
        other = [i for i in node.input if resolve(i) != data]
        if len(other) != 1 or other[0] not in consts or consts[other[0]].size != 1:
            break
        c = float(consts[other[0]].reshape(()))
        data_first = resolve(node.input[0]) == data
        if node.op_type == "Div" and not data_first:
            break
        if node.op_type == "Sub":
            a, b = (a, b - c) if data_first else (-a, c - b)
        elif node.op_type == "Add":
            b += c
        elif node.op_type == "Mul":
            a, b = a * c, b * c
        else:
            a, b = a / c, b / c
        alias[node.output[0]] = data
        found = True
    return (a, b) if found else None


def _const(consts: dict[str, np.ndarray], name: str, node: onnx.NodeProto, what: str, where: str) -> np.ndarray:
    if name not in consts:
        raise DataFormatError(f"{where}: node {node.name or node.op_type}: {what} {name} is not a constant")
    return consts[name].astype(np.float32)


def _layer(node: onnx.NodeProto, consts: dict[str, np.ndarray], resolve, where: str) -> Layer:
    attrs = _attributes(node)
    name = node.name or f"{node.op_type}->{node.output[0]}"
    data = [resolve(i) for i in node.input if i and resolve(i) not in consts]
    if node.op_type == "Add" and len(data) == 2:
        return Layer("merge", name, {}, {"inputs": data}, data[0], node.output[0])
    if node.op_type == "Add" and len(data) == 1:  # the bias of a MatMul
        bias = next(i for i in node.input if i in consts)
        return Layer("bias", name, {"bias": _const(consts, bias, node, "bias", where)}, {}, data[0], node.output[0])
    if node.op_type not in _LAYER_OPS or len(data) != 1:
        raise DataFormatError(f"{where}: node {name}: {node.op_type} is not an operator of a recognition "
                              f"backbone faceflow reads (Conv, BatchNormalization, PRelu, Gemm, MatMul, Add)")
    source, output = data[0], node.output[0]
    if node.op_type == "Conv":
        tensors = {"weight": _const(consts, node.input[1], node, "weight", where)}
        if len(node.input) > 2 and node.input[2]:
            tensors["bias"] = _const(consts, node.input[2], node, "bias", where)
        kernel = tensors["weight"].shape[2:]
        pads = list(attrs.get("pads", [0] * 4))
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise DataFormatError(f"{where}: node {name}: auto_pad {attrs['auto_pad']!r} is not read")
        return Layer("conv", name, tensors, {"stride": tuple(attrs.get("strides", [1, 1])), "pads": tuple(pads),
                                             "groups": int(attrs.get("group", 1)), "kernel": tuple(kernel),
                                             "dilations": tuple(attrs.get("dilations", [1, 1]))}, source, output)
    if node.op_type == "BatchNormalization":
        g, beta, mean, var = (_const(consts, n, node, what, where)
                              for n, what in zip(node.input[1:5], ("scale", "bias", "mean", "var")))
        return Layer("bn", name, {"gamma": g, "beta": beta, "mean": mean, "var": var},
                     {"eps": float(attrs.get("epsilon", 1e-5))}, source, output)
    if node.op_type == "PRelu":
        slope = _const(consts, node.input[1], node, "slope", where)
        return Layer("prelu", name, {"slope": slope.reshape(-1)}, {}, source, output)
    if node.op_type == "Gemm":
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0 or float(attrs.get("beta", 1.0)) != 1.0:
            raise DataFormatError(f"{where}: node {name}: Gemm with transA/alpha/beta is not read")
        weight = _const(consts, node.input[1], node, "weight", where)
        tensors = {"weight": weight if attrs.get("transB", 0) else weight.T}
        if len(node.input) > 2 and node.input[2]:
            tensors["bias"] = _const(consts, node.input[2], node, "bias", where).reshape(-1)
        return Layer("linear", name, tensors, {}, source, output)
    weight = _const(consts, node.input[1], node, "weight", where)  # MatMul: x @ W, W is in x out
    return Layer("linear", name, {"weight": weight.T}, {}, source, output)


def _order(nodes: list[Layer], start: str, where: str) -> list[Layer]:
    """Depth-first topological order from `start`, the longer of two branches first; MatMul + bias merged.

    `nodes` come in the graph's node order, which ONNX requires to be topological.
    """
    consumers: dict[str, list[Layer]] = {}
    for node in nodes:
        for source in node.attrs.get("inputs", [node.source]):
            consumers.setdefault(source, []).append(node)
    height: dict[int, int] = {}
    for node in reversed(nodes):  # layers on the longest path from each node to the output
        below = [height.get(id(n), 0) for n in consumers.get(node.output, [])]
        height[id(node)] = (node.kind not in ("merge", "bias")) + max(below, default=0)
    waiting = {id(n): len(n.attrs.get("inputs", [n.source])) for n in nodes}
    ordered: list[Layer] = []
    done: set[int] = set()
    stack: list[Layer] = []

    def release(tensor: str) -> None:
        ready = []
        for nxt in consumers.get(tensor, []):
            waiting[id(nxt)] -= 1
            if waiting[id(nxt)] == 0:
                ready.append(nxt)
        stack.extend(sorted(ready, key=lambda n: height[id(n)]))

    release(start)
    while stack:
        node = stack.pop()
        done.add(id(node))
        if node.kind == "bias":
            if not ordered or ordered[-1].kind != "linear" or ordered[-1].output != node.source:
                raise DataFormatError(f"{where}: node {node.node}: an Add of a constant that does not follow a MatMul")
            ordered[-1].tensors["bias"] = node.tensors["bias"].reshape(-1)
            ordered[-1].output = node.output
        else:
            ordered.append(node)
        release(node.output)
    unreached = [n.node for n in nodes if id(n) not in done]
    if unreached:
        raise DataFormatError(f"{where}: node {unreached[0]} is not reached from the input ({len(unreached)} such)")
    return ordered
