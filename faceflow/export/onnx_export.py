"""ONNX export of a faceflow backbone through oneflow-onnx, for face-recognition ONNX consumers.

The model has one input `data` (N x 3 x 112 x 112 float32 RGB, N dynamic), one output `fc1` (the
N x E embedding) and fp32 weights. Normalisation is NOT inside the graph: feed `(x - 127.5) / 127.5`.
That is what InsightFace's model_zoo (ArcFaceONNX) feeds a graph whose first nodes are not Sub/Mul,
so the model works there unchanged. oneflow-onnx fixes the batch it traced; `onnx_batch` makes it
symbolic again, and the export is checked with onnxruntime at batch 1 and at the parity batch size.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from faceflow.runtime.flow import flow, nn

from faceflow.data.atomic import atomic_file
from faceflow.errors import FaceflowError
from faceflow.export.onnx_batch import make_batch_dynamic
from faceflow.export.parity import Parity, compare, normalised_nchw, oneflow_embeddings, require

DEFAULT_OPSET = 11
INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
TRACE_BATCH = 1


class _EmbeddingGraph(nn.Graph):
    """Static graph of the backbone in eval mode: what oneflow-onnx converts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def build(self, x):
        return self.model(x)


def _convert(model: nn.Module, out_path: Path, opset: int, work: Path) -> None:
    from oneflow_onnx.oneflow2onnx.flow2onnx import Export

    model.eval()
    graph = _EmbeddingGraph(model)
    graph(flow.zeros(TRACE_BATCH, 3, 112, 112, dtype=flow.float32))
    weights = work / "weights"
    flow.save(graph.state_dict(), str(weights))
    Export(graph, str(weights), str(out_path), opset=opset)


def export_onnx(model: nn.Module, out_path: str | os.PathLike, images: np.ndarray,
                opset: int = DEFAULT_OPSET) -> Parity:
    """Convert `model` to ONNX at `out_path`; published only if onnx.checker and the parity check on `images` pass."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.work-", dir=out_path.parent) as work:
        raw = Path(work) / "raw.onnx"
        try:
            _convert(model, raw, opset, Path(work))
        except Exception as err:  # oneflow-onnx raises assorted types for unsupported ops
            raise FaceflowError(f"{out_path}: oneflow-onnx conversion failed: {type(err).__name__}: {err}") from err
        proto = make_batch_dynamic(onnx.load(str(raw)), TRACE_BATCH, INPUT_NAME, OUTPUT_NAME)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as err:
            raise FaceflowError(f"{out_path}: onnx.checker rejected the model: {err}") from None
        with atomic_file(out_path) as tmp:
            onnx.save(proto, str(tmp))
            parity = require(onnx_parity(model, tmp, normalised_nchw(images)), str(out_path))
    return parity


def onnx_embeddings(onnx_path: str | os.PathLike, *batches: np.ndarray) -> list[np.ndarray]:
    """Embeddings of normalised NCHW batches from an exported model, run with onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return [session.run(None, {INPUT_NAME: batch})[0] for batch in batches]


def onnx_parity(model: nn.Module, onnx_path: str | os.PathLike, batch: np.ndarray) -> Parity:
    """onnxruntime vs OneFlow on `batch` (and on its first image alone, proving the batch is dynamic)."""
    if len(batch) == 1:
        batch = np.concatenate([batch, batch[:, :, :, ::-1]])
    reference = oneflow_embeddings(model, batch)
    try:
        whole, single = onnx_embeddings(onnx_path, batch, batch[:1])
    except Exception as err:  # onnxruntime errors are not a stable type
        raise FaceflowError(f"{onnx_path}: onnxruntime cannot run the model: {err}") from None
    require(compare(reference[:1], single), f"{onnx_path} (batch 1)")
    return compare(reference, whole)
