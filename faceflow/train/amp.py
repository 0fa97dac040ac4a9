"""Dynamic loss scaling for eager AMP (nn.Graph uses OneFlow's own GradScaler, whose state is a graph variable).

Every rank makes the same decision each step: each grad is reduced on the rank's own data (the whole
tensor for broadcast grads, the rank's shard for class-split ones), the per-grad sums are added into one
number, that number is summed over the ranks in one all-reduce and read once on the host. So when one
rank's shard overflows, every rank skips the update and halves its scale, and all ranks go on making
the same collective calls (gradient clipping included). The state (`state_dict`) is kept in checkpoints.

`FACEFLOW_FORCE_OVERFLOW=STEP[:RANK]` makes update STEP (counted from 1) see an infinite gradient in the
class weight (the last parameter) on rank RANK (every rank if omitted): the GPU check and the tests use it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from faceflow.runtime.flow import flow

from faceflow.errors import FaceflowError

FORCE_OVERFLOW_ENV = "FACEFLOW_FORCE_OVERFLOW"


@dataclass(frozen=True)
class ForcedOverflow:
    """Update `step` (from 1) gets an infinite gradient on `rank` (None: every rank)."""

    step: int
    rank: Optional[int] = None

    def hits(self, step: int, rank: int) -> bool:
        """Whether update `step` on `rank` is the forced one."""
        return step == self.step and (self.rank is None or self.rank == rank)


def forced_overflow(env: Mapping[str, str] = os.environ) -> Optional[ForcedOverflow]:
    """The overflow that FACEFLOW_FORCE_OVERFLOW asks for, or None; a one-line error for a bad value."""
    text = env.get(FORCE_OVERFLOW_ENV, "").strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 2 or not all(part.strip().isdigit() for part in parts) or int(parts[0]) < 1:
        raise FaceflowError(f"{FORCE_OVERFLOW_ENV}={text!r}: expected STEP or STEP:RANK (whole numbers, STEP >= 1)")
    return ForcedOverflow(int(parts[0]), int(parts[1]) if len(parts) == 2 else None)


def _local(tensor: flow.Tensor) -> flow.Tensor:
    """This rank's data of a (global or local) tensor: the whole tensor if broadcast, its shard if split."""
    return tensor.to_local() if tensor.is_global else tensor


class DynamicLossScaler:
    """Scale the loss before backward; unscale grads, skip the update and halve on overflow, grow when stable."""

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 2000,
                 forced: Optional[ForcedOverflow] = None) -> None:
        self.scale = init_scale
        self.growth_interval = growth_interval
        self.forced = forced
        self._good_steps = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the scale and the count of finite steps since it last changed."""
        return {"scale": self.scale, "good_steps": self._good_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's `state_dict()`."""
        self.scale = float(state["scale"])
        self._good_steps = int(state["good_steps"])

    def all_finite(self, grads: list[flow.Tensor]) -> bool:
        """True when every element of every grad, on every rank, is finite (one all-reduce, one host read)."""
        if not grads:
            return True
        sums = [_local(grad).abs().sum().to(flow.float32) for grad in grads]
        total = flow.stack(sums).sum().reshape(1)  # inf or nan if any element is
        if grads[0].is_global:
            total = total.to_global(placement=grads[0].placement, sbp=flow.sbp.partial_sum)
            total = total.to_global(sbp=flow.sbp.broadcast).to_local()
        return math.isfinite(float(total.numpy()[0]))

    def unscale_and_check(self, params: list[flow.Tensor], step: Optional[int] = None) -> bool:
        """Divide grads by the scale; True when every grad is finite on every rank (the update may proceed).

        `step` (from 1) is the update being made; it only matters for a forced overflow.
        """
        grads = [param.grad for param in params if param.grad is not None]
        for grad in grads:
            grad.mul_(1.0 / self.scale)
        if grads and self.forced is not None and step is not None and self.forced.hits(step, flow.env.get_rank()):
            _local(grads[-1]).fill_(float("inf"))
        finite = self.all_finite(grads)
        if finite:
            self._good_steps += 1
            if self._good_steps >= self.growth_interval:
                self.scale *= 2.0
                self._good_steps = 0
        else:
            self.scale /= 2.0
            self._good_steps = 0
        return finite
