"""Margin settings by loss name and the combined margin `s * (cos(m1*theta + m2) - m3)` on target logits.

The margin is the true combined form for every (m1, m2, m3): unlike arcface_torch, m2 is kept when m3 > 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from faceflow.runtime.flow import flow

from faceflow.heads.registry import margin_values, register_loss


@dataclass(frozen=True)
class Margins:
    """Combined margin parameters: target logit `s * (cos(m1*theta + m2) - m3)`, others `s * cos(theta)`."""

    m1: float = 1.0
    m2: float = 0.0
    m3: float = 0.0
    s: float = 64.0


# softmax (plain FC with bias) has no margins; the others are the OneFlow port's settings (s = 64).
register_loss("softmax", margins=None)
register_loss("nsoftmax", margins={"m1": 1.0, "m2": 0.0, "m3": 0.0, "s": 64.0}, greater_than={"m1": 0.0, "s": 0.0})
register_loss("sphereface", margins={"m1": 1.5, "m2": 0.0, "m3": 0.0, "s": 64.0}, greater_than={"m1": 1.0, "s": 0.0})
register_loss("arcface", margins={"m1": 1.0, "m2": 0.5, "m3": 0.0, "s": 64.0}, greater_than={"m1": 0.0, "s": 0.0})
register_loss("cosface", margins={"m1": 1.0, "m2": 0.0, "m3": 0.4, "s": 64.0}, greater_than={"m1": 0.0, "s": 0.0})
register_loss("combined", margins={"m1": 1.0, "m2": 0.3, "m3": 0.2, "s": 64.0}, greater_than={"m1": 0.0, "s": 0.0})


def resolve_margins(loss: str, overrides: Optional[Mapping[str, Any]] = None) -> Optional[Margins]:
    """The margins for `loss` with config `margins:` overrides applied (checked by `margin_values`); None for softmax."""
    values = margin_values(loss, overrides)
    return None if values is None else Margins(**values)


# cosines are kept this far inside [-1, 1] before acos: d acos / d cos is infinite at +-1
COS_EPS = 1e-7


def _is_plain_shift(margins: Margins) -> bool:
    return margins.m1 == 1.0 and margins.m2 == 0.0


def _inside_unit(cos: flow.Tensor) -> flow.Tensor:
    return flow.clamp(cos, -1.0 + COS_EPS, 1.0 - COS_EPS)


def margin_target(cos_target: flow.Tensor, margins: Margins) -> flow.Tensor:
    """`s * (cos(m1*acos(t) + m2) - m3)` for target cosines t (any shape, ordinary ops)."""
    if _is_plain_shift(margins):
        return (cos_target - margins.m3) * margins.s
    theta = flow.acos(_inside_unit(cos_target))
    return (flow.cos(theta * margins.m1 + margins.m2) - margins.m3) * margins.s


def margin_logits(cos: flow.Tensor, labels: flow.Tensor, margins: Margins) -> flow.Tensor:
    """Scaled logits with the combined margin on each row's target column (works on split(1) global logits).

    Cosines are clamped inside (-1, 1) first: OneFlow's op has an inf/NaN gradient at |cos| = 1 (any margins).
    """
    shifted = flow._C.combined_margin_loss(_inside_unit(cos), labels, m1=margins.m1, m2=margins.m2, m3=margins.m3)
    return shifted * margins.s


__all__ = ["Margins", "margin_logits", "margin_target", "resolve_margins"]
