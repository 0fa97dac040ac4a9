"""`faceflow export bundle` (what the workflow runs): model.onnx + mxnet/ + export.json, written atomically;
the mbf ONNX model is held to the same contract as r18 in test_export_onnx.py."""
from __future__ import annotations

import json

from export_samples import check_onnx_model, random_backbone, save_checkpoint
from faceflow.cli.main import main as faceflow_main
from faceflow.export.bundle import bundle_paths
from faceflow.export.mxnet_export import mxnet_embeddings
from faceflow.export.parity import MIN_COSINE, compare, drawn_faces, normalised_nchw, oneflow_embeddings, raw_nchw

EMBEDDING = 16


def test_bundle_writes_both_formats_and_export_json(tmp_path, capsys):
    model = random_backbone("mbf", EMBEDDING, seed=8)
    checkpoint = save_checkpoint(model, "mbf", EMBEDDING, tmp_path / "run" / "checkpoints", step=42)
    export_dir = tmp_path / "run" / "export"
    assert faceflow_main(["export", "bundle", str(checkpoint), str(export_dir), "--parity-images", "4"]) == 0
    assert "model.onnx (onnx)" in capsys.readouterr().out
    assert all(path.is_file() for path in bundle_paths(export_dir))
    assert [p.name for p in export_dir.parent.iterdir() if p.name.startswith(".")] == []

    record = json.loads((export_dir / "export.json").read_text())
    assert (record["checkpoint"], record["step"], record["network"]) == (str(checkpoint), 42, "mbf")
    assert set(record["formats"]) == {"onnx", "mxnet"}
    for name, result in record["formats"].items():
        assert result["passed"] is True and result["min_cosine"] >= MIN_COSINE, name
        assert 0 <= result["max_abs_diff"] < 1e-2 and result["images"] == 4
        assert (export_dir / result["path"]).is_file()

    images = drawn_faces(5, seed=2)
    check_onnx_model(export_dir / "model.onnx", model, images, EMBEDDING)
    reference = oneflow_embeddings(model, normalised_nchw(images))
    mx_embeddings = mxnet_embeddings(export_dir / "mxnet" / "model", 0, raw_nchw(images))
    assert compare(reference, mx_embeddings).min_cosine >= MIN_COSINE


def test_bundle_format_selection_and_errors(tmp_path, capsys):
    model = random_backbone("mbf", EMBEDDING, seed=3)
    checkpoint = save_checkpoint(model, "mbf", EMBEDDING, tmp_path / "checkpoints")
    bad = tmp_path / "bad"
    assert faceflow_main(["export", "bundle", str(checkpoint), str(bad), "--formats", "onnx,tflite"]) == 1
    assert "--formats" in capsys.readouterr().err
    assert not bad.exists()
    missing = tmp_path / "missing"
    assert faceflow_main(["export", "bundle", str(tmp_path / "nope"), str(missing)]) == 1
    assert "not a faceflow checkpoint" in capsys.readouterr().err
    assert not missing.exists()
    mxnet_only = tmp_path / "mxnet_only"
    assert faceflow_main(["export", "bundle", str(checkpoint), str(mxnet_only), "--formats", "mxnet",
                          "--parity-images", "2"]) == 0
    assert sorted(p.name for p in mxnet_only.iterdir()) == ["export.json", "mxnet"]
    assert list(json.loads((mxnet_only / "export.json").read_text())["formats"]) == ["mxnet"]
