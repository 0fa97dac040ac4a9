"""MXNet symbols of InsightFace's recognition networks (fresnet IR units with fc_type E; fmobilefacenet GDC).

They mirror `recognition/symbol/fresnet.py` and `fmobilefacenet.py` operator by operator and name by
name, so a faceflow backbone exported into them loads and runs like a model InsightFace shipped.
Like InsightFace's symbols they take raw 0..255 RGB `data` and normalise inside the graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from faceflow.export.mxnet_runtime import mx
from faceflow.models.iresnet import UNITS as IRESNET_UNITS
from faceflow.models.mobilefacenet import STANDARD_BLOCKS as MBF_BLOCKS, gdc_kernel

# faceflow trains on (x - 127.5) / 127.5; InsightFace's own symbols use (x - 127.5) * 0.0078125.
INPUT_MEAN = 127.5
INPUT_SCALE = 1.0 / 127.5

IRESNET_FILTERS = (64, 64, 128, 256, 512)
MBF_CHANNELS = (64, 128, 256, 512)


@dataclass(frozen=True)
class BatchNormSpec:
    """BatchNorm hyper-parameters in MXNet's convention (momentum = weight of the running value).

    `eps` overrides `default_eps` per BatchNorm layer name, so every layer keeps its own epsilon.
    """

    default_eps: float = 2e-5
    momentum: float = 0.9
    eps: Mapping[str, float] = field(default_factory=dict)

    def eps_for(self, name: str) -> float:
        """Epsilon of the BatchNorm layer `name`."""
        return float(self.eps.get(name, self.default_eps))


def insightface_bn(network: str) -> BatchNormSpec:
    """InsightFace's own BatchNorm settings: eps 2e-5 in fresnet; MXNet's default 1e-3 in fmobilefacenet but fc1."""
    if network == "mbf":
        return BatchNormSpec(default_eps=1e-3, eps={"fc1": 2e-5})
    return BatchNormSpec(default_eps=2e-5)


def _bn(data: mx.sym.Symbol, name: str, bn: BatchNormSpec, fix_gamma: bool = False) -> mx.sym.Symbol:
    return mx.sym.BatchNorm(data=data, fix_gamma=fix_gamma, eps=bn.eps_for(name), momentum=bn.momentum,
                            name=name)


def _prelu(data: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    return mx.sym.LeakyReLU(data=data, act_type="prelu", name=name)


def _normalised_input(mean: float, scale: float) -> mx.sym.Symbol:
    data = mx.sym.Variable(name="data")
    data = mx.sym.identity(data=data, name="id")
    data = mx.sym._internal._minus_scalar(data, scalar=mean, name="_minusscalar0")
    return mx.sym._internal._mul_scalar(data, scalar=scale, name="_mulscalar0")


def _residual_unit_v3(data, num_filter: int, stride: int, dim_match: bool, name: str, bn: BatchNormSpec):
    """fresnet `residual_unit_v3`: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, + shortcut."""
    body = _bn(data, name + "_bn1", bn)
    body = mx.sym.Convolution(data=body, num_filter=num_filter, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                              no_bias=True, name=name + "_conv1")
    body = _bn(body, name + "_bn2", bn)
    body = _prelu(body, name + "_relu1")
    body = mx.sym.Convolution(data=body, num_filter=num_filter, kernel=(3, 3), stride=(stride, stride),
                              pad=(1, 1), no_bias=True, name=name + "_conv2")
    body = _bn(body, name + "_bn3", bn)
    if dim_match:
        shortcut = data
    else:
        shortcut = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(1, 1), stride=(stride, stride),
                                      no_bias=True, name=name + "_conv1sc")
        shortcut = _bn(shortcut, name + "_sc", bn)
    return body + shortcut


def _embedding_e(body, embedding_size: int, bn: BatchNormSpec, dropout: float):
    """fc_type 'E': BN, Dropout, FC `pre_fc1`, BN `fc1` with gamma fixed to 1."""
    body = _bn(body, "bn1", bn)
    if dropout > 0:
        body = mx.sym.Dropout(data=body, p=dropout)
    body = mx.sym.FullyConnected(data=body, num_hidden=embedding_size, name="pre_fc1")
    return _bn(body, "fc1", bn, fix_gamma=True)


def iresnet_symbol(units: tuple[int, ...], embedding_size: int, bn: BatchNormSpec = insightface_bn("r50"),
                   dropout: float = 0.0, input_mean: float = INPUT_MEAN,
                   input_scale: float = INPUT_SCALE) -> mx.sym.Symbol:
    """LResNet-E-IR (fresnet, version_input 1, version_unit 3, PReLU, fc_type E); output `fc1_output`."""
    body = _normalised_input(input_mean, input_scale)
    body = mx.sym.Convolution(data=body, num_filter=IRESNET_FILTERS[0], kernel=(3, 3), stride=(1, 1),
                              pad=(1, 1), no_bias=True, name="conv0")
    body = _bn(body, "bn0", bn)
    body = _prelu(body, "relu0")
    for i, count in enumerate(units):
        filters = IRESNET_FILTERS[i + 1]
        body = _residual_unit_v3(body, filters, 2, False, f"stage{i + 1}_unit1", bn)
        for j in range(count - 1):
            body = _residual_unit_v3(body, filters, 1, True, f"stage{i + 1}_unit{j + 2}", bn)
    return _embedding_e(body, embedding_size, bn, dropout)


def _mbf_conv(data, num_filter: int, kernel: int, stride: int, pad: int, num_group: int, name: str,
              bn: BatchNormSpec, act: bool):
    body = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=(kernel, kernel), stride=(stride, stride),
                              pad=(pad, pad), num_group=num_group, no_bias=True, name=name + "_conv2d")
    body = _bn(body, name + "_batchnorm", bn)
    return _prelu(body, name + "_relu") if act else body


def _mbf_dresidual(data, num_out: int, stride: int, num_group: int, name: str, bn: BatchNormSpec):
    body = _mbf_conv(data, num_group, 1, 1, 0, 1, name + "_conv_sep", bn, act=True)
    body = _mbf_conv(body, num_group, 3, stride, 1, num_group, name + "_conv_dw", bn, act=True)
    return _mbf_conv(body, num_out, 1, 1, 0, 1, name + "_conv_proj", bn, act=False)


def _mbf_residual(data, num_block: int, num_out: int, num_group: int, name: str, bn: BatchNormSpec):
    identity = data
    for i in range(num_block):
        identity = _mbf_dresidual(identity, num_out, 1, num_group, f"{name}_block{i}", bn) + identity
    return identity


def mobilefacenet_symbol(embedding_size: int, bn: BatchNormSpec = insightface_bn("mbf"),
                         blocks: tuple[int, ...] = MBF_BLOCKS, channels: tuple[int, ...] = MBF_CHANNELS,
                         input_mean: float = INPUT_MEAN, input_scale: float = INPUT_SCALE,
                         stem_stride: int = 2, trunk_scale: int = 1) -> mx.sym.Symbol:
    """MobileFaceNet (fmobilefacenet, fc_type GDC, `net_blocks` = blocks); output `fc1_output`.

    `stem_stride` 4 is faceflow's quick variant (strided `conv_2_dw`, GDC kernel of the smaller map);
    `trunk_scale` multiplies the channels between bottlenecks (see `faceflow.models.mobilefacenet`).
    """
    c64, c128, c256, c512 = channels
    t64, t128 = c64 * trunk_scale, c128 * trunk_scale
    body = _normalised_input(input_mean, input_scale)
    body = _mbf_conv(body, t64, 3, 2, 1, 1, "conv_1", bn, act=True)
    if blocks[0] == 1:
        body = _mbf_conv(body, t64, 3, stem_stride // 2, 1, c64, "conv_2_dw", bn, act=True)
    else:
        body = _mbf_residual(body, blocks[0], t64, c64, "res_2", bn)
    body = _mbf_dresidual(body, t64, 2, c128, "dconv_23", bn)
    body = _mbf_residual(body, blocks[1], t64, c128, "res_3", bn)
    body = _mbf_dresidual(body, t128, 2, c256, "dconv_34", bn)
    body = _mbf_residual(body, blocks[2], t128, c256, "res_4", bn)
    body = _mbf_dresidual(body, t128, 2, c512, "dconv_45", bn)
    body = _mbf_residual(body, blocks[3], t128, c256, "res_5", bn)
    body = _mbf_conv(body, c512, 1, 1, 0, 1, "conv_6sep", bn, act=True)
    body = _mbf_conv(body, c512, gdc_kernel(stem_stride), 1, 0, c512, "conv_6dw7_7", bn, act=False)
    body = mx.sym.FullyConnected(data=body, num_hidden=embedding_size, name="pre_fc1")
    return _bn(body, "fc1", bn, fix_gamma=True)


def build_symbol(network: str, embedding_size: int, bn: BatchNormSpec | None = None,
                 dropout: float = 0.0) -> mx.sym.Symbol:
    """The InsightFace symbol of a standard faceflow network (r18..r200, mbf)."""
    bn = bn or insightface_bn(network)
    if network in IRESNET_UNITS:
        return iresnet_symbol(IRESNET_UNITS[network], embedding_size, bn, dropout)
    if network == "mbf":
        return mobilefacenet_symbol(embedding_size, bn)
    raise ValueError(f"network: no MXNet symbol for {network!r} (expected one of "
                     f"{', '.join([*IRESNET_UNITS, 'mbf'])})")
