"""Make the batch dimension of a traced ONNX face model symbolic and give its input/output stable names.

oneflow-onnx writes the traced batch size into the input, the output, every value_info and the
constant shape of each Reshape; here the shapes become `batch` and those Reshapes infer their leading
dimension (ONNX Reshape's -1, or 0, a copy of the input's, when -1 is taken), so consumers can feed any batch.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

BATCH_DIM = "batch"


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new


def _reshape_shapes(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    initialisers = {tensor.name: tensor for tensor in graph.initializer}
    constants = {node.output[0]: attr.t for node in graph.node if node.op_type == "Constant"
                 for attr in node.attribute if attr.name == "value"}
    return {**constants, **initialisers}


def _free_reshape_batch(graph: onnx.GraphProto, traced_batch: int) -> None:
    shapes = _reshape_shapes(graph)
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] not in shapes:
            continue
        tensor = shapes[node.input[1]]
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim == 1 and shape.size >= 1 and shape[0] == traced_batch:
            # -1 (inferred from the other dimensions) also holds where the input's first dimension is not the
            # batch, e.g. a Linear on tokens reshaped from (batch * tokens) x C; 0 (copy) when -1 is taken
            shape[0] = 0 if -1 in shape[1:] else -1
            tensor.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), tensor.name))


def make_batch_dynamic(model: onnx.ModelProto, traced_batch: int, input_name: str,
                       output_name: str) -> onnx.ModelProto:
    """Rename the single input/output, turn the traced batch into the symbolic `batch`, re-infer shapes."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    _rename(graph, graph.input[0].name, input_name)
    _rename(graph, graph.output[0].name, output_name)
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    _free_reshape_batch(graph, traced_batch)
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)
