"""Dynamic loss scaling for eager AMP (nn.Graph uses OneFlow's own GradScaler instead)."""
from __future__ import annotations

import math

from faceflow.runtime.flow import flow


def _scalar(tensor: flow.Tensor) -> float:
    """A one-element (global or local) tensor as a Python float."""
    return float((tensor.to_local() if tensor.is_global else tensor).numpy())


class DynamicLossScaler:
    """Scale the loss before backward; unscale grads, skip the update and halve on overflow, grow when stable."""

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 2000) -> None:
        self.scale = init_scale
        self.growth_interval = growth_interval
        self._good_steps = 0

    def unscale_and_check(self, params: list[flow.Tensor]) -> bool:
        """Divide grads by the scale; True when every grad is finite (the update may proceed)."""
        finite = True
        for param in params:
            if param.grad is None:
                continue
            param.grad.mul_(1.0 / self.scale)
            if finite and not math.isfinite(_scalar(param.grad.abs().sum())):
                finite = False
        if finite:
            self._good_steps += 1
            if self._good_steps >= self.growth_interval:
                self.scale *= 2.0
                self._good_steps = 0
        else:
            self.scale /= 2.0
            self._good_steps = 0
        return finite
