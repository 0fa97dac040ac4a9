"""Backbones: registry, pinned parameter counts (closed form + published figures), output shapes, MXNet-style names."""
from __future__ import annotations

import numpy as np
from faceflow.runtime.flow import flow, nn
import pytest

from faceflow.errors import ConfigError
from faceflow.models import build_backbone, list_models

IRESNET_UNITS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3),
                 "r100": (3, 13, 30, 3), "r200": (6, 26, 60, 6)}
# Pinned totals (all parameters, including the fixed gamma of the fix_gamma `fc1` BatchNorm).
PINNED = {("r18", 512): 24_025_600, ("r34", 512): 34_139_328, ("r50", 512): 43_590_848,
          ("r100", 512): 65_156_160, ("r200", 512): 118_833_920,
          ("mbf", 128): 1_003_264, ("mbf", 512): 1_201_024}


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def iresnet_closed_form(units: tuple[int, ...], emb: int) -> int:
    """fresnet 'E' parameter count written out by hand from the layer list in REFERENCE section 6."""
    total = 3 * 64 * 9 + 2 * 64 + 64  # conv0, bn0, relu0
    cin = 64
    for count, c in zip(units, (64, 128, 256, 512)):
        for unit in range(count):
            total += 2 * cin + cin * c * 9 + 2 * c + c + c * c * 9 + 2 * c
            if unit == 0:
                total += cin * c + 2 * c  # conv1sc + sc
            cin = c
    return total + 2 * 512 + (512 * 7 * 7 * emb + emb) + 2 * emb  # bn1, pre_fc1, fc1


def mbf_closed_form(emb: int, blocks: tuple[int, ...] = (1, 4, 6, 2)) -> int:
    """fmobilefacenet + GDC parameter count from the symbol's layer list."""
    def unit(cin: int, cout: int, k: int = 1, groups: int = 1, linear: bool = False) -> int:
        return cin // groups * cout * k * k + 2 * cout + (0 if linear else cout)

    def dres(cin: int, cout: int, g: int) -> int:
        return unit(cin, g) + unit(g, g, 3, g) + unit(g, cout, linear=True)

    total = unit(3, 64, 3) + (unit(64, 64, 3, 64) if blocks[0] == 1 else blocks[0] * dres(64, 64, 64))
    total += dres(64, 64, 128) + blocks[1] * dres(64, 64, 128)
    total += dres(64, 128, 256) + blocks[2] * dres(128, 128, 256)
    total += dres(128, 128, 512) + blocks[3] * dres(128, 128, 256)
    total += unit(128, 512) + unit(512, 512, 7, 512, linear=True)
    return total + 512 * emb + emb + 2 * emb


def bn_folded_count(model: nn.Module) -> int:
    """Inference parameter count after folding every conv/FC-following BatchNorm into a bias.

    This is how OpenVINO's model zoo counts the InsightFace MXNet models: IResNet's pre-activation
    `bn1` BatchNorms (and the head `bn1`) stay as scale+shift.
    """
    folded = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "fc1":
                folded += 2 * module.num_features  # folds into pre_fc1's existing bias
            elif leaf != "bn1":
                folded += module.num_features  # gamma+beta -> one conv bias
    return _param_count(model) - folded


def test_registry_lists_every_network() -> None:
    assert set(list_models()) >= {"r18", "r34", "r50", "r100", "r200", "mbf"}


def test_unknown_network_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="network"):
        build_backbone("r1000")


@pytest.mark.parametrize("name", ["r18", "r34", "r50", "r100", "r200"])
def test_iresnet_parameter_count(name: str) -> None:
    model = build_backbone(name, 512)
    expected = iresnet_closed_form(IRESNET_UNITS[name], 512)
    assert _param_count(model) == expected == PINNED[(name, 512)]
    # output shape without a forward pass: the E head maps the 512 x 7 x 7 map of a 112 x 112 input to 512
    assert tuple(model.pre_fc1.weight.shape) == (512, 512 * 7 * 7) and model.fc1.num_features == 512
    assert len(model.unit_names) == sum(IRESNET_UNITS[name])


@pytest.mark.parametrize("emb", [128, 512])
def test_mbf_parameter_count(emb: int) -> None:
    model = build_backbone("mbf", emb)
    assert _param_count(model) == mbf_closed_form(emb) == PINNED[("mbf", emb)]


def test_mbf_blocks_knob_matches_closed_form() -> None:
    model = build_backbone("mbf", 128, blocks=(2, 8, 16, 4))
    assert _param_count(model) == mbf_closed_form(128, (2, 8, 16, 4))
    assert hasattr(model, "res_2") and not hasattr(model, "conv_2_dw")


def test_counts_match_published_insightface_models() -> None:
    """OpenVINO OMZ: face-recognition-resnet100-arcface 65.1320 MParams, mobilefacenet-arcface 0.993 MParams."""
    assert round(bn_folded_count(build_backbone("r100", 512)) / 1e6, 4) == 65.1320
    assert round(bn_folded_count(build_backbone("mbf", 128)) / 1e6, 3) == 0.993


@pytest.mark.parametrize("name,emb,kwargs", [("r18", 512, {}), ("mbf", 128, {}),
                                             ("mbf", 64, {"width_mult": 0.5, "dropout": 0.2}),
                                             ("mbf", 128, {"width_mult": 0.25, "blocks": [1, 1, 1, 1],
                                                           "stem_stride": 4})])
def test_forward_shape_and_finite(name: str, emb: int, kwargs: dict) -> None:
    flow.manual_seed(0)
    model = build_backbone(name, emb, **kwargs)
    x = flow.tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32))
    model.train()
    out = model(x)
    assert tuple(out.shape) == (2, emb)
    assert np.isfinite(out.numpy()).all()
    model.eval()
    with flow.no_grad():
        assert tuple(model(x).shape) == (2, emb)


def test_width_mult_makes_a_lighter_mbf() -> None:
    assert _param_count(build_backbone("mbf", 128, width_mult=0.5)) < _param_count(build_backbone("mbf", 128)) / 2


def test_stem_stride_4_only_shrinks_the_gdc_kernel() -> None:
    standard, quick = build_backbone("mbf", 128), build_backbone("mbf", 128, stem_stride=4)
    assert quick.conv_2_dw.conv2d.stride == (2, 2) and standard.conv_2_dw.conv2d.stride == (1, 1)
    # 112 -> 56 -> 28 -> 14 -> 7 -> 4: the GDC depthwise kernel covers the 4x4 map instead of 7x7.
    assert tuple(quick.conv_6dw7_7.conv2d.weight.shape) == (512, 1, 4, 4)
    assert _param_count(standard) - _param_count(quick) == 512 * (7 * 7 - 4 * 4)
    with flow.no_grad():
        features = quick.conv_6sep(quick.res_5(quick.dconv_45(quick.res_4(quick.dconv_34(quick.res_3(
            quick.dconv_23(quick.conv_2_dw(quick.conv_1(flow.zeros(1, 3, 112, 112))))))))))
    assert tuple(features.shape[2:]) == (4, 4)


@pytest.mark.parametrize("kwargs", [{"stem_stride": 3}, {"stem_stride": 4, "blocks": [2, 4, 6, 2]}])
def test_bad_stem_stride_is_a_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="stem_stride"):
        build_backbone("mbf", 128, **kwargs)


def test_state_dict_names_follow_insightface_symbols() -> None:
    r18 = build_backbone("r18").state_dict()
    for key in ("conv0.weight", "bn0.running_var", "relu0.weight", "stage1_unit1.conv1sc.weight",
                "stage1_unit1.sc.weight", "stage1_unit2.bn1.bias", "stage4_unit2.relu1.weight",
                "stage4_unit2.conv2.weight", "bn1.weight", "pre_fc1.weight", "pre_fc1.bias", "fc1.running_mean"):
        assert key in r18, key
    assert "stage1_unit2.conv1sc.weight" not in r18
    mbf = build_backbone("mbf", 128).state_dict()
    for key in ("conv_1.conv2d.weight", "conv_1.batchnorm.weight", "conv_1.relu.weight",
                "conv_2_dw.conv2d.weight", "dconv_23.conv_sep.conv2d.weight", "dconv_23.conv_proj.batchnorm.bias",
                "res_3.block3.conv_dw.relu.weight", "res_5.block1.conv_proj.conv2d.weight",
                "conv_6sep.conv2d.weight", "conv_6dw7_7.batchnorm.running_var", "pre_fc1.weight", "fc1.running_var"):
        assert key in mbf, key
    assert "conv_6dw7_7.relu.weight" not in mbf


def test_fc1_is_fix_gamma_batchnorm() -> None:
    for name in ("r18", "mbf"):
        fc1 = build_backbone(name, 128).fc1
        assert not fc1.weight.requires_grad
        assert np.all(fc1.weight.numpy() == 1.0)
        assert fc1.eps == pytest.approx(2e-5)
