"""MXNet export: InsightFace naming, `fc1_output`, BN eps/momentum/fix_gamma as InsightFace, loadable with
mx.model.load_checkpoint into an mx.mod.Module, and the same embeddings as OneFlow."""
from __future__ import annotations

import json

import numpy as np
import pytest

from export_samples import random_backbone, save_checkpoint
from faceflow.cli.main import main as faceflow_main
from faceflow.export.mxnet_export import export_mxnet, mxnet_embeddings
from faceflow.export.mxnet_runtime import mx
from faceflow.export.parity import MIN_COSINE, compare, drawn_faces, normalised_nchw, oneflow_embeddings, raw_nchw

EMBEDDING = 16


def _bn_attrs(symbol_file):
    nodes = json.loads(symbol_file.read_text())["nodes"]
    return nodes, {n["name"]: n["attrs"] for n in nodes if n["op"] == "BatchNorm"}


@pytest.mark.parametrize("network,fc1_gamma", [("r18", None), ("mbf", 0.7)])
def test_mxnet_export_loads_in_module_and_matches_oneflow(tmp_path, network, fc1_gamma):
    # fc1_gamma: a trained (non-unit, partly negative) fc1 gamma must survive MXNet's fix_gamma fc1.
    model = random_backbone(network, EMBEDDING, seed=2, fc1_gamma=fc1_gamma)
    images = drawn_faces(4, seed=5)
    prefix = tmp_path / "out" / "model"
    parity = export_mxnet(model, prefix, images)
    assert parity.passed and parity.images == 4

    symbol, args, aux = mx.model.load_checkpoint(str(prefix), 0)
    assert symbol.list_outputs() == ["fc1_output"]
    module = mx.mod.Module(symbol=symbol, context=mx.cpu(), label_names=None)
    module.bind(data_shapes=[("data", (4, 3, 112, 112))], for_training=False)
    module.set_params(args, aux)
    module.forward(mx.io.DataBatch(data=[mx.nd.array(raw_nchw(images))]), is_train=False)
    embeddings = module.get_outputs()[0].asnumpy()
    reference = oneflow_embeddings(model, normalised_nchw(images))
    figures = compare(reference, embeddings)
    assert figures.min_cosine >= MIN_COSINE
    assert figures.max_abs_diff <= 1e-3 * np.abs(reference).max()

    nodes, bn = _bn_attrs(tmp_path / "out" / "model-symbol.json")
    assert [n["op"] for n in nodes[1:4]] == ["_copy", "_minus_scalar", "_mul_scalar"]
    assert float(nodes[2]["attrs"]["scalar"]) == 127.5
    assert float(nodes[3]["attrs"]["scalar"]) == pytest.approx(1 / 127.5)
    assert bn["fc1"]["fix_gamma"] == "True" and float(bn["fc1"]["eps"]) == pytest.approx(2e-5)
    assert all(a["fix_gamma"] == "False" for name, a in bn.items() if name != "fc1")
    assert all(float(a["momentum"]) == pytest.approx(0.9) for a in bn.values())
    if network == "r18":
        assert all(float(a["eps"]) == pytest.approx(2e-5) for a in bn.values())
        for name in ("conv0_weight", "bn0_gamma", "relu0_gamma", "stage1_unit1_bn1_beta", "stage1_unit1_conv1sc_weight",
                     "stage1_unit1_sc_gamma", "stage4_unit2_relu1_gamma", "bn1_gamma", "pre_fc1_weight", "pre_fc1_bias"):
            assert name in args, name
        assert {"fc1_moving_mean", "fc1_moving_var", "bn0_moving_var"} <= set(aux)
        assert args["pre_fc1_weight"].shape == (EMBEDDING, 512 * 7 * 7)
    else:
        assert float(bn["conv_1_batchnorm"]["eps"]) == pytest.approx(1e-3)
        for name in ("conv_1_conv2d_weight", "conv_1_relu_gamma", "conv_2_dw_conv2d_weight",
                     "res_3_block3_conv_proj_batchnorm_gamma", "conv_6dw7_7_conv2d_weight", "pre_fc1_weight"):
            assert name in args, name
        np.testing.assert_array_equal(args["fc1_gamma"].asnumpy(), 1.0)


def test_quick_mbf_variant_exports_with_its_stride_and_gdc_kernel(tmp_path):
    # The demo's narrow MobileFaceNet with a strided conv_2_dw (4x4 GDC kernel) must export as it runs.
    model = random_backbone("mbf", EMBEDDING, seed=9, width_mult=0.25, blocks=[1, 1, 1, 1], stem_stride=4)
    images = drawn_faces(3, seed=1)
    parity = export_mxnet(model, tmp_path / "quick", images)
    assert parity.passed and parity.min_cosine >= MIN_COSINE
    nodes = {n["name"]: n.get("attrs", {}) for n in json.loads((tmp_path / "quick-symbol.json").read_text())["nodes"]}
    assert nodes["conv_2_dw_conv2d"]["stride"] == "(2, 2)"
    assert nodes["conv_6dw7_7_conv2d"]["kernel"] == "(4, 4)"


def test_mxnet_export_cli_from_checkpoint(tmp_path, capsys):
    model = random_backbone("mbf", EMBEDDING, seed=4)
    checkpoint = save_checkpoint(model, "mbf", EMBEDDING, tmp_path / "checkpoints")
    prefix = tmp_path / "mx" / "model"
    assert faceflow_main(["export", "mxnet", str(checkpoint), str(prefix), "--parity-images", "3"]) == 0
    assert "min_cosine" in capsys.readouterr().out
    images = drawn_faces(3, seed=9)
    figures = compare(oneflow_embeddings(model, normalised_nchw(images)), mxnet_embeddings(prefix, 0, raw_nchw(images)))
    assert figures.min_cosine >= MIN_COSINE
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["model-0000.params", "model-symbol.json"]


@pytest.mark.slow
@pytest.mark.parametrize("network", ["r34", "r50", "r100", "r200"])
def test_every_iresnet_maps_onto_the_insightface_symbol(network):
    # Names and shapes of every parameter checked against MXNet's shape inference (no forward pass).
    from faceflow.export.mxnet_export import mxnet_params
    from faceflow.models import build_backbone

    model = build_backbone(network, embedding_size=8)
    symbol, args, aux = mxnet_params(model)
    assert symbol.list_outputs() == ["fc1_output"]
    expected_units = {"r34": 16, "r50": 24, "r100": 49, "r200": 98}[network]
    assert len({name.split("_bn1")[0] for name in args if name.startswith("stage") and "_bn1_" in name}) == expected_units
    assert len(args) + len(aux) == len(symbol.list_arguments()) - 1 + len(symbol.list_auxiliary_states())
