"""ONNX export: one `data` input with a dynamic batch, one embedding output, fp32, no normalisation inside,
and onnxruntime reproducing OneFlow on real (JPEG-decoded) images at batch 1 and batch 5."""
from __future__ import annotations

import numpy as np
import pytest

from export_samples import check_onnx_model, random_backbone
from faceflow.errors import FaceflowError
from faceflow.export.onnx_export import export_onnx
from faceflow.export.parity import MIN_COSINE, compare, drawn_faces, require

EMBEDDING = 32


def test_onnx_export_r18_matches_oneflow_with_dynamic_batch(tmp_path):
    # mbf goes through the same checks in test_export_bundle.py (each conversion costs tens of seconds).
    model = random_backbone("r18", EMBEDDING, seed=1)
    images = drawn_faces(5, seed=3)
    out = tmp_path / "r18.onnx"
    parity = export_onnx(model, out, images)
    assert parity.images == 5 and parity.min_cosine >= MIN_COSINE and parity.passed
    assert [p.name for p in tmp_path.iterdir()] == ["r18.onnx"]
    check_onnx_model(out, model, images, EMBEDDING)


def test_parity_check_rejects_a_different_model():
    reference = np.random.default_rng(0).normal(size=(4, 8))
    same = compare(reference, reference + 1e-7)
    assert require(same, "x") is same
    assert compare(reference, reference).max_abs_diff == 0
    other = compare(reference, np.random.default_rng(1).normal(size=(4, 8)))
    assert not other.passed
    with pytest.raises(FaceflowError, match="min cosine"):
        require(other, "model.onnx")
