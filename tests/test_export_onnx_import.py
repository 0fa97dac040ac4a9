"""`faceflow import onnx`: graphs PyTorch's exporters wrote from arcface_torch-layout models (TorchScript
exporter with Conv+BN folded and with BatchNormalization kept, the dynamo exporter that also folds the
embedding BN into the Gemm, MobileFaceNet) become faceflow checkpoints with onnxruntime's and PyTorch's
embeddings; normalisation inside the graph and a fixed batch are handled; a wrong network or an operator
no backbone has is a one-line error."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cli_support import one_line_error
from faceflow.checkpoint import load_backbone, read_checkpoint_meta
from faceflow.cli.main import main as faceflow_main
from faceflow.errors import FaceflowError
from faceflow.export.onnx_graph import graph_layers, load_graph
from faceflow.export.onnx_import import import_onnx, onnxruntime_embeddings
from faceflow.export.parity import MIN_COSINE, compare, normalised_nchw, oneflow_embeddings


@pytest.mark.parametrize("name,network", [("r18_fold", "r18"), ("r18_preserve", "r18"), ("r18_dynamo", "r18"),
                                          ("mbf_fold", "mbf")])
def test_onnx_import_gives_onnxruntime_and_pytorch_embeddings(torch_reference, tmp_path, capsys, name, network):
    work, faces = torch_reference
    out = tmp_path / "imported" / "step_000000"
    assert faceflow_main(["import", "onnx", str(work / f"{name}.onnx"), str(out), "--network", network]) == 0
    assert "min_cosine" in capsys.readouterr().out
    model, config, _ = load_backbone(out)
    assert config["network"] == network and config["embedding_size"] == 64
    assert read_checkpoint_meta(out)[1]["imported"]["passed"] is True
    ours = oneflow_embeddings(model, normalised_nchw(faces))
    for reference in (onnxruntime_embeddings(work / f"{name}.onnx", faces, raw_input=False),
                      np.load(work / f"{network}.npy")):
        parity = compare(reference, ours)
        assert parity.min_cosine >= MIN_COSINE, parity


def test_exporters_differ_in_what_they_fold(torch_reference):
    work, _ = torch_reference
    kinds = {mode: [layer.kind for layer in graph_layers(load_graph(work / f"r18_{mode}.onnx"), mode).layers]
             for mode in ("fold", "preserve", "dynamo")}
    # r18: 21 convolutions; kept BNs: all 31 (preserve), pre-activation ones + head BN2d + BN1d (fold), no BN1d (dynamo)
    assert [k.count("conv") for k in kinds.values()] == [21, 21, 21]
    assert kinds["preserve"].count("bn") == 31
    assert kinds["fold"].count("bn") == 8 + 1 + 1 and kinds["fold"][-1] == "bn"
    assert kinds["dynamo"].count("bn") == 9 and kinds["dynamo"][-1] == "linear"


def _with_normalisation_and_fixed_batch(source, target) -> None:
    model = onnx.load(str(source))
    graph = model.graph
    data = graph.input[0].name
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    for node in graph.node:
        node.input[:] = ["normalised" if i == data else i for i in node.input]
    graph.initializer.extend([helper.make_tensor("mean", TensorProto.FLOAT, [], [127.5]),
                              helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 127.5])])
    prefix = [helper.make_node("Sub", [data, "mean"], ["centred"], name="sub0"),
              helper.make_node("Mul", ["centred", "scale"], ["normalised"], name="mul0")]
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))


def test_normalisation_inside_the_graph_is_folded_and_a_fixed_batch_is_fed_in_chunks(torch_reference, tmp_path):
    work, faces = torch_reference
    raw_model = tmp_path / "raw_input.onnx"
    _with_normalisation_and_fixed_batch(work / "r18_fold.onnx", raw_model)
    model, config, graph = import_onnx(raw_model, "r18")
    assert graph.affine == pytest.approx((1 / 127.5, -1.0))
    ours = oneflow_embeddings(model, normalised_nchw(faces))
    assert compare(onnxruntime_embeddings(raw_model, faces, raw_input=True), ours).min_cosine >= MIN_COSINE
    assert compare(np.load(work / "r18.npy"), ours).min_cosine >= MIN_COSINE


def test_wrong_network_suggests_the_graphs_own(torch_reference, tmp_path, capsys):
    work, _ = torch_reference
    out = tmp_path / "out" / "step_000000"
    assert faceflow_main(["import", "onnx", str(work / "r18_fold.onnx"), str(out), "--network", "r34"]) == 1
    assert "use --network r18" in one_line_error(capsys)
    assert faceflow_main(["import", "onnx", str(work / "mbf_fold.onnx"), str(out), "--network", "r18"]) == 1
    assert "use --network mbf" in one_line_error(capsys)
    assert not out.exists()


def test_operator_no_backbone_has_is_named(tmp_path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["data", "w"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["c"], ["s"], name="gate")],
        "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, None)], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "odd.onnx"))
    with pytest.raises(FaceflowError, match=r"node gate: Sigmoid is not an operator"):
        import_onnx(tmp_path / "odd.onnx", "r18")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf" * 10)
    with pytest.raises(FaceflowError, match=r"junk\.onnx: not an ONNX model"):
        import_onnx(tmp_path / "junk.onnx", "r18")
