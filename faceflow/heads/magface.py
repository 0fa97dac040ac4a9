"""MagFace (Meng et al., CVPR 2021): an angular margin growing with the feature magnitude, plus its regulariser.

a = clip(norm, l_a, u_a); m(a) rises linearly from l_m at a = l_a to u_m at a = u_a; the target logit is
s * cos(theta + m(a)) (cos - m(a)*sin(m(a)) past theta = pi - m(a)), the others s * cos; the loss adds
lambda_g * mean(1/a + a/u_a^2). The norm keeps its gradient: the margin and the regulariser shape it.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from faceflow.runtime.flow import flow

from faceflow.heads.adaptive import AdaptiveMargin
from faceflow.heads.registry import register_loss


class MagFaceMargin(AdaptiveMargin):
    """MagFace's magnitude-aware margin and norm regulariser g(a) (no running statistics)."""

    def __init__(self, placement: flow.placement, s: float, l_a: float, u_a: float, l_m: float, u_m: float,
                 lambda_g: float) -> None:
        super().__init__(s, placement)
        self.l_a, self.u_a, self.l_m, self.u_m, self.lambda_g = map(float, (l_a, u_a, l_m, u_m, lambda_g))

    def magnitudes(self, norms: flow.Tensor) -> flow.Tensor:
        """a = clip(norm, l_a, u_a)."""
        return flow.clamp(norms, self.l_a, self.u_a)

    def forward(self, cos: flow.Tensor, target_cos: flow.Tensor,
                norms: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        a = self.magnitudes(norms)
        margin = (a - self.l_a) * ((self.u_m - self.l_m) / (self.u_a - self.l_a)) + self.l_m
        sin = flow.sqrt(1.0 - target_cos * target_cos)
        shifted = target_cos * flow.cos(margin) - sin * flow.sin(margin)
        target = flow.where(target_cos > flow.cos(math.pi - margin), shifted,
                            target_cos - flow.sin(math.pi - margin) * margin)
        return target * self.scale, cos * self.scale

    def penalty(self, norms: flow.Tensor) -> Optional[flow.Tensor]:
        a = self.magnitudes(norms)
        return (1.0 / a + a / (self.u_a * self.u_a)).mean() * self.lambda_g


def magface_head(config: Mapping[str, Any], placement: flow.placement, margins: dict) -> flow.nn.Module:
    """The config's FC layer with MagFace's margin and regulariser."""
    from faceflow.heads import fc_head

    return fc_head(config, placement, MagFaceMargin(placement, **margins))


register_loss("magface", margins={"s": 64.0, "l_a": 10.0, "u_a": 110.0, "l_m": 0.45, "u_m": 0.8, "lambda_g": 35.0},
              greater_than={"s": 0.0, "l_a": 0.0, "u_a": "l_a"}, head=magface_head)
