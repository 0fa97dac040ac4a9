"""ONNX export: one `data` input with a dynamic batch, one embedding output, fp32, no normalisation inside,
and onnxruntime reproducing OneFlow on real (JPEG-decoded) images at batch 1 and batch 5."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export_samples import random_backbone
from faceflow.errors import FaceflowError
from faceflow.export.onnx_export import export_onnx
from faceflow.export.parity import MIN_COSINE, compare, drawn_faces, normalised_nchw, oneflow_embeddings, require

EMBEDDING = 32


@pytest.mark.parametrize("network", ["r18", "mbf"])
def test_onnx_export_matches_oneflow_with_dynamic_batch(tmp_path, network):
    model = random_backbone(network, EMBEDDING, seed=1)
    images = drawn_faces(5, seed=3)
    out = tmp_path / f"{network}.onnx"
    parity = export_onnx(model, out, images)
    assert parity.images == 5 and parity.min_cosine >= MIN_COSINE and parity.passed

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert inp.name == "data"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert [d.dim_value for d in dims[1:]] == [3, 112, 112]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outp.type.tensor_type.shape.dim[0].dim_param
    assert outp.type.tensor_type.shape.dim[1].dim_value == EMBEDDING
    weights = [t for t in proto.graph.initializer if len(t.dims) > 1]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT for t in weights)
    # InsightFace's ArcFaceONNX looks for Sub/Mul among the first 8 nodes to decide "normalises inside".
    for node in proto.graph.node[:8]:
        assert node.op_type not in ("Sub", "Mul", "Div")
        assert not node.name.startswith(("Sub", "_minus", "Mul", "_mul"))

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = normalised_nchw(images)
    reference = oneflow_embeddings(model, batch)
    for size in (1, 5):
        result = session.run(None, {"data": batch[:size]})
        assert len(result) == 1 and result[0].shape == (size, EMBEDDING)
        figures = compare(reference[:size], result[0])
        assert figures.min_cosine >= MIN_COSINE
        assert figures.max_abs_diff <= 1e-3 * np.abs(reference).max()


def test_parity_check_rejects_a_different_model():
    reference = np.random.default_rng(0).normal(size=(4, 8))
    same = compare(reference, reference + 1e-7)
    assert require(same, "x") is same
    assert compare(reference, reference).max_abs_diff == 0
    other = compare(reference, np.random.default_rng(1).normal(size=(4, 8)))
    assert not other.passed
    with pytest.raises(FaceflowError, match="min cosine"):
        require(other, "model.onnx")
