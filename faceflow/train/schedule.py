"""Learning-rate schedule: linear warmup, then multistep (absolute `scales` of lr at `lr_steps`) or poly.

`learning_rate` is the closed form (used for logs, ETA and tests); `build_scheduler` expresses the
same curve with OneFlow schedulers that nn.Graph can compile (SequentialLR of LinearLR /
ConstantLR / PolynomialLR), so eager and graph runs follow one schedule.
"""
from __future__ import annotations

from typing import Any

from faceflow.runtime.flow import flow

from faceflow.train.rules import check_schedule

_FOREVER = 2**30


def _warmup_start(warmup_steps: int) -> float:
    return 1.0 / (warmup_steps + 1)


def learning_rate(config: dict[str, Any], step: int, total_steps: int) -> float:
    """LR used by update number `step + 1` (step counts completed updates, from 0)."""
    base, warmup = float(config["lr"]), int(config["warmup_steps"])
    if step < warmup:
        return base * (step + 1) / (warmup + 1)
    if config["lr_schedule"] == "poly":
        span = max(1, total_steps - warmup)
        progress = min(step - warmup, span) / span
        return base * (1.0 - progress) ** float(config["power"])
    factor = 1.0
    for boundary, scale in zip(config["lr_steps"], config["scales"]):
        if step >= boundary:
            factor = float(scale)
    return base * factor


def build_scheduler(optimizer: flow.optim.Optimizer, config: dict[str, Any], total_steps: int):
    """OneFlow LR scheduler (graph-compilable) equal to `learning_rate` at every step."""
    check_schedule(config, total_steps)
    warmup = int(config["warmup_steps"])
    schedulers, milestones, rescale = [], [], []
    if warmup > 0:
        schedulers.append(flow.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=_warmup_start(warmup), end_factor=1.0, total_iters=warmup))
        milestones.append(warmup)
        rescale.append(True)
    if config["lr_schedule"] == "poly":
        schedulers.append(flow.optim.lr_scheduler.PolynomialLR(
            optimizer, decay_batch=max(1, total_steps - warmup), end_learning_rate=0.0,
            power=float(config["power"])))
    else:
        schedulers.append(flow.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=_FOREVER))
        for boundary, scale in zip(config["lr_steps"], config["scales"]):
            schedulers.append(flow.optim.lr_scheduler.ConstantLR(
                optimizer, factor=float(scale), total_iters=_FOREVER))
            milestones.append(int(boundary))
            rescale.append(False)
    if len(schedulers) == 1:
        return schedulers[0]
    # each scheduler's constructor already wrote its first lr; SequentialLR re-initializes step 0
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"]
    return flow.optim.lr_scheduler.SequentialLR(optimizer, schedulers, milestones, interval_rescaling=rescale)
