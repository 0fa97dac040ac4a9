"""CurricularFace (Huang et al., CVPR 2020): ArcFace's target plus hard negatives weighted by a curriculum.

Target cos(theta + m), or cos - m*sin(m) past theta = pi - m; t is an EMA (0.01, from 0) of the global batch's
mean target cosine, and a negative whose cosine exceeds the target's cos(theta + m) becomes cos_j * (t + cos_j).
All logits are scaled by s.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from faceflow.runtime.flow import flow

from faceflow.heads.adaptive import AdaptiveMargin
from faceflow.heads.registry import register_loss

T_ALPHA = 0.01


class CurricularMargin(AdaptiveMargin):
    """CurricularFace's margin; buffer `t` (the curriculum's running mean target cosine)."""

    def __init__(self, placement: flow.placement, m: float, s: float) -> None:
        super().__init__(s, placement)
        self.m = float(m)
        self.running("t", 0.0)

    def forward(self, cos: flow.Tensor, target_cos: flow.Tensor,
                norms: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        sin = flow.sqrt(1.0 - target_cos * target_cos)
        shifted = target_cos * math.cos(self.m) - sin * math.sin(self.m)
        target = flow.where(target_cos > math.cos(math.pi - self.m), shifted,
                            target_cos - math.sin(math.pi - self.m) * self.m)
        t = self.update("t", target_cos.mean(), T_ALPHA)
        hard = cos > shifted.detach().unsqueeze(1)
        others = flow.where(hard, cos * (t + cos), cos)
        return target * self.scale, others * self.scale


def curricularface_head(config: Mapping[str, Any], placement: flow.placement, margins: dict) -> flow.nn.Module:
    """The config's FC layer with CurricularFace's margin."""
    from faceflow.heads import fc_head

    return fc_head(config, placement, CurricularMargin(placement, **margins))


register_loss("curricularface", margins={"m": 0.5, "s": 64.0}, greater_than={"s": 0.0}, head=curricularface_head)
