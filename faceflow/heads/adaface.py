"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to image quality, read off the feature norm.

With n the embedding norm (detached, clipped to [0.001, 100]) and running batch mean and std of n (EMA with
`t_alpha`, from the global batch), z = clip(h * (n - mean) / (std + eps), -1, 1); the target logit is
s * cos(clip(theta - m*z, eps, pi - eps)) - s * (m + m*z), the others s * cos (cosines clamped to
[-1 + eps, 1 - eps], eps 1e-3). The running mean and std start at 20 and 100, as in the paper's code.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from faceflow.runtime.flow import flow

from faceflow.heads.adaptive import AdaptiveMargin, batch_mean_std
from faceflow.heads.registry import register_loss

EPS = 1e-3
NORM_RANGE = (0.001, 100.0)
INITIAL_MEAN, INITIAL_STD = 20.0, 100.0


class AdaFaceMargin(AdaptiveMargin):
    """AdaFace's norm-adaptive angular + additive margin; buffers `batch_mean`, `batch_std`."""

    def __init__(self, placement: flow.placement, m: float, h: float, s: float, t_alpha: float) -> None:
        super().__init__(s, placement)
        self.m, self.h = float(m), float(h)
        self.t_alpha = float(t_alpha)
        self.running("batch_mean", INITIAL_MEAN)
        self.running("batch_std", INITIAL_STD)

    def forward(self, cos: flow.Tensor, target_cos: flow.Tensor,
                norms: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        safe = flow.clamp(norms.detach(), *NORM_RANGE)
        batch_mean, batch_std = batch_mean_std(safe)
        mean = self.update("batch_mean", batch_mean, self.t_alpha)
        std = self.update("batch_std", batch_std, self.t_alpha)
        z = flow.clamp((safe - mean) / (std + EPS) * self.h, -1.0, 1.0)
        theta = flow.acos(flow.clamp(target_cos, -1.0 + EPS, 1.0 - EPS))
        angular = flow.clamp(theta - self.m * z, EPS, math.pi - EPS)
        target = (flow.cos(angular) - (self.m + self.m * z)) * self.scale
        return target, flow.clamp(cos, -1.0 + EPS, 1.0 - EPS) * self.scale


def adaface_head(config: Mapping[str, Any], placement: flow.placement, margins: dict) -> flow.nn.Module:
    """The config's FC layer with AdaFace's margin."""
    from faceflow.heads import fc_head

    return fc_head(config, placement, AdaFaceMargin(placement, **margins))


register_loss("adaface", margins={"m": 0.4, "h": 0.333, "s": 64.0, "t_alpha": 0.01},
              greater_than={"h": 0.0, "s": 0.0, "t_alpha": 0.0}, at_most={"t_alpha": 1.0}, head=adaface_head)
