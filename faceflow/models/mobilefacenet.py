"""MobileFaceNet (`mbf`, InsightFace `fmobilefacenet.py` with the GDC output head).

Module names mirror the MXNet symbol so a state-dict key maps 1:1 to the MXNet parameter name:
replace '.' by '_', then for BatchNorm `weight/bias/running_mean/running_var` ->
`gamma/beta/moving_mean/moving_var`, for PReLU `weight` -> `gamma`. Examples:
`conv_1.conv2d.weight` -> `conv_1_conv2d_weight`, `conv_1.batchnorm.weight` -> `conv_1_batchnorm_gamma`,
`conv_1.relu.weight` -> `conv_1_relu_gamma`, `res_3.block0.conv_sep.conv2d.weight` ->
`res_3_block0_conv_sep_conv2d_weight`, `dconv_23.conv_proj.batchnorm.running_var` ->
`dconv_23_conv_proj_batchnorm_moving_var`, `conv_6dw7_7.conv2d.weight`, `pre_fc1.weight`, `fc1.*`.
Knobs: `blocks` (InsightFace `net_blocks`, default (1, 4, 6, 2); blocks[0] > 1 turns `conv_2_dw` into
residual stage `res_2`), `width_mult` (scales every channel count, rounded to a multiple of 8;
1.0 is the standard network) and `stem_stride` (2 is the standard network; 4 makes `conv_2_dw` strided,
so every later layer runs on a quarter of the pixels and the GDC kernel shrinks to the 4x4 map left
of a 112x112 input, for quick CPU demo runs) and `trunk_scale`
(arcface_torch's `scale`: multiplies the channels between the bottlenecks, not their expansion widths nor
conv_6sep; `conv_2_dw` then keeps its unscaled group count; arcface_torch's `mbf` is trunk_scale 2).
`fc1` is a fix_gamma BatchNorm (weight fixed at 1).
"""
from __future__ import annotations

from typing import Sequence

from faceflow.runtime.flow import flow, nn

from faceflow.errors import ConfigError
from faceflow.models.registry import register_model

CONV_BN_EPS = 1e-3  # MXNet BatchNorm default, used by fmobilefacenet's Conv/Linear units
FC_BN_EPS = 2e-5
BN_MOMENTUM = 0.1  # OneFlow/PyTorch convention; equals MXNet momentum 0.9
STANDARD_BLOCKS = (1, 4, 6, 2)
INPUT_SIZE = 112


def gdc_kernel(stem_stride: int, input_size: int = INPUT_SIZE) -> int:
    """Side of the feature map the GDC depthwise conv covers: the input after every stride-2 3x3 conv."""
    size = input_size
    for _ in range(3 + stem_stride // 2):
        size = (size + 1) // 2
    return size


class ConvUnit(nn.Module):
    """InsightFace `Conv`/`Linear` unit: conv (no bias) + BN, followed by PReLU unless linear."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1, linear: bool = False) -> None:
        super().__init__()
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding,
                                groups=groups, bias=False)
        self.batchnorm = nn.BatchNorm2d(out_channels, eps=CONV_BN_EPS, momentum=BN_MOMENTUM)
        self.relu = None if linear else nn.PReLU(out_channels)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        x = self.batchnorm(self.conv2d(x))
        return x if self.relu is None else self.relu(x)


class DResidual(nn.Module):
    """Depthwise-separable bottleneck: 1x1 expand (PReLU), 3x3 depthwise (stride, PReLU), 1x1 linear projection."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, stride: int) -> None:
        super().__init__()
        self.conv_sep = ConvUnit(in_channels, groups)
        self.conv_dw = ConvUnit(groups, groups, kernel=3, stride=stride, padding=1, groups=groups)
        self.conv_proj = ConvUnit(groups, out_channels, linear=True)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        return self.conv_proj(self.conv_dw(self.conv_sep(x)))


class Residual(nn.Module):
    """`num_block` stride-1 DResidual units with identity shortcuts (children block0, block1, ...)."""

    def __init__(self, num_block: int, channels: int, groups: int) -> None:
        super().__init__()
        self.block_names = [f"block{i}" for i in range(num_block)]
        for name in self.block_names:
            self.add_module(name, DResidual(channels, channels, groups, stride=1))

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        for name in self.block_names:
            x = x + getattr(self, name)(x)
        return x


def _scaled(channels: int, width_mult: float) -> int:
    return max(8, int(round(channels * width_mult / 8.0)) * 8)


class MobileFaceNet(nn.Module):
    """MobileFaceNet with the GDC head (7x7 depthwise linear conv, FC, BN1d)."""

    def __init__(self, embedding_size: int = 128, blocks: Sequence[int] = STANDARD_BLOCKS,
                 width_mult: float = 1.0, dropout: float = 0.0, stem_stride: int = 2,
                 trunk_scale: int = 1) -> None:
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ConfigError(f"blocks: expected 4 positive integers, got {list(blocks)}")
        if not width_mult > 0:
            raise ConfigError(f"width_mult: must be > 0, got {width_mult}")
        if stem_stride not in (2, 4) or (stem_stride == 4 and blocks[0] != 1):
            raise ConfigError(f"stem_stride: must be 2, or 4 with blocks[0] == 1 (a strided conv_2_dw), "
                              f"got {stem_stride} with blocks {list(blocks)}")
        if not (isinstance(trunk_scale, int) and trunk_scale >= 1):
            raise ConfigError(f"trunk_scale: must be a positive integer, got {trunk_scale!r}")
        c64, c128, c256, c512 = (_scaled(c, width_mult) for c in (64, 128, 256, 512))
        t64, t128 = c64 * trunk_scale, c128 * trunk_scale
        self.conv_1 = ConvUnit(3, t64, kernel=3, stride=2, padding=1)
        if blocks[0] == 1:
            self.conv_2_dw = ConvUnit(t64, t64, kernel=3, stride=stem_stride // 2, padding=1, groups=c64)
        else:
            self.res_2 = Residual(blocks[0], t64, c64)
        self.dconv_23 = DResidual(t64, t64, c128, stride=2)
        self.res_3 = Residual(blocks[1], t64, c128)
        self.dconv_34 = DResidual(t64, t128, c256, stride=2)
        self.res_4 = Residual(blocks[2], t128, c256)
        self.dconv_45 = DResidual(t128, t128, c512, stride=2)
        self.res_5 = Residual(blocks[3], t128, c256)
        self.conv_6sep = ConvUnit(t128, c512)
        self.conv_6dw7_7 = ConvUnit(c512, c512, kernel=gdc_kernel(stem_stride), groups=c512, linear=True)
        self.dropout = nn.Dropout(p=dropout)
        self.pre_fc1 = nn.Linear(c512, embedding_size)
        self.fc1 = nn.BatchNorm1d(embedding_size, eps=FC_BN_EPS, momentum=BN_MOMENTUM)
        nn.init.ones_(self.fc1.weight)
        self.fc1.weight.requires_grad = False
        self._stem2 = "conv_2_dw" if blocks[0] == 1 else "res_2"

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        x = getattr(self, self._stem2)(self.conv_1(x))
        x = self.res_3(self.dconv_23(x))
        x = self.res_4(self.dconv_34(x))
        x = self.res_5(self.dconv_45(x))
        x = self.conv_6dw7_7(self.conv_6sep(x))
        return self.fc1(self.pre_fc1(self.dropout(flow.flatten(x, 1))))


@register_model("mbf")
def mbf(embedding_size: int = 512, blocks: Sequence[int] = STANDARD_BLOCKS, width_mult: float = 1.0,
        dropout: float = 0.0, stem_stride: int = 2, trunk_scale: int = 1) -> MobileFaceNet:
    """MobileFaceNet; `build_backbone('mbf', 128)` is the common face-recognition setting."""
    return MobileFaceNet(embedding_size, blocks=blocks, width_mult=width_mult, dropout=dropout,
                         stem_stride=stem_stride, trunk_scale=trunk_scale)
