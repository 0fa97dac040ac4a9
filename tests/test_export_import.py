"""MXNet import: InsightFace-style models built here with MXNet's symbol API (random weights and BN
statistics, 0.0078125 input scaling, fc1 fix_gamma, a training fc7 head) become faceflow checkpoints
with the same embeddings; a wrong --network or shape is a one-line error naming the parameter."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cli_support import one_line_error
from export_samples import insightface_mxnet_model, random_backbone
from faceflow.checkpoint import load_backbone
from faceflow.cli.main import main as faceflow_main
from faceflow.data.verification_bin import write_bin
from faceflow.errors import FaceflowError
from faceflow.export.mxnet_export import export_mxnet, mxnet_embeddings
from faceflow.export.mxnet_import import import_mxnet
from faceflow.export.parity import MIN_COSINE, bin_faces, compare, drawn_faces, normalised_nchw, oneflow_embeddings, raw_nchw

EMBEDDING = 16


@pytest.mark.parametrize("network,classifier", [("r18", 10), ("mbf", 0)])
def test_import_insightface_model_gives_same_embeddings(tmp_path, capsys, network, classifier):
    prefix = insightface_mxnet_model(network, EMBEDDING, tmp_path / "insightface" / "model", epoch=3,
                                     classifier=classifier)
    out = tmp_path / "imported" / "step_000000"
    extra = []
    if network == "mbf":  # parity images from a verification .bin of real JPEGs
        extra = ["--images", str(_jpeg_bin(tmp_path / "lfw.bin")), "--parity-images", "3"]
    assert faceflow_main(["import", "mxnet", str(prefix), "3", str(out), "--network", network, *extra]) == 0
    assert "min_cosine" in capsys.readouterr().out
    model, config, step = load_backbone(out)
    assert (config["network"], config["embedding_size"], step) == (network, EMBEDDING, 0)
    images = drawn_faces(4, seed=11)
    figures = compare(mxnet_embeddings(prefix, 3, raw_nchw(images)), oneflow_embeddings(model, normalised_nchw(images)))
    assert figures.min_cosine >= MIN_COSINE
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def _jpeg_bin(path):
    images = []
    for i in range(4):
        buffer = io.BytesIO()
        Image.fromarray(drawn_faces(1, seed=20 + i)[0]).resize((100, 120)).save(buffer, format="JPEG")
        images.append(buffer.getvalue())
    write_bin(path, images, [True, False])
    return path


def test_bin_faces_decodes_and_resizes(tmp_path):
    faces = bin_faces(_jpeg_bin(tmp_path / "x.bin"), 3)
    assert faces.shape == (3, 112, 112, 3) and faces.dtype == np.uint8 and faces.std() > 10


def test_export_then_import_round_trip(tmp_path):
    model = random_backbone("mbf", EMBEDDING, seed=6, fc1_gamma=1.3)
    images = drawn_faces(3, seed=1)
    export_mxnet(model, tmp_path / "model", images)
    imported, config = import_mxnet(tmp_path / "model", 0, "mbf")
    assert config["embedding_size"] == EMBEDDING
    batch = normalised_nchw(images)
    assert compare(oneflow_embeddings(model, batch), oneflow_embeddings(imported, batch)).min_cosine >= MIN_COSINE


def test_wrong_network_or_shapes_are_clear_errors(tmp_path, capsys):
    prefix = insightface_mxnet_model("mbf", EMBEDDING, tmp_path / "mbf" / "model", epoch=1)
    out = tmp_path / "out" / "step_000000"
    assert faceflow_main(["import", "mxnet", str(prefix), "1", str(out), "--network", "r18"]) == 1
    err = one_line_error(capsys)
    assert "arg:conv0_weight" in err and "--network" in err
    assert faceflow_main(["import", "mxnet", str(prefix), "1", str(out), "--network", "mbf",
                          "--embedding-size", "8"]) == 1
    err = one_line_error(capsys)
    assert "arg:pre_fc1_weight" in err and "(16, 512)" in err and "(8, 512)" in err
    assert faceflow_main(["import", "mxnet", str(prefix), "2", str(out), "--network", "mbf"]) == 1
    assert "model-0002.params: no such file" in one_line_error(capsys)
    assert not out.exists()


def test_deeper_model_imported_as_shallower_network_names_the_extra_parameter(tmp_path):
    prefix = insightface_mxnet_model("r18", EMBEDDING, tmp_path / "r18" / "model", epoch=0)
    with pytest.raises(FaceflowError, match=r"needs arg:stage1_unit3_bn1_gamma .*--network"):
        import_mxnet(prefix, 0, "r34")
