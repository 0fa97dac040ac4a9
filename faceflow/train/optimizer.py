"""The optimizer by name (`optimizer: sgd | adamw`, as arcface_torch) and its per-element state slots.

SGD with momentum is the seed's and the large-scale configs' choice. AdamW (decoupled weight decay)
learns a small network much faster in few steps; it is what the CPU demo uses and what arcface_torch
uses for ViT backbones. Partial FC swaps the per-class rows of the state tensors named here.
"""
from __future__ import annotations

from typing import Any, Optional

from faceflow.runtime.flow import flow


def build_optimizer(params: list[flow.nn.Parameter], config: dict[str, Any]) -> flow.optim.Optimizer:
    """SGD(lr, momentum, weight_decay) or AdamW(lr, weight_decay), with gradient clipping when configured."""
    group: dict[str, Any] = {"params": params}
    if config["clip_grad_norm"] is not None:
        group.update(clip_grad_max_norm=float(config["clip_grad_norm"]), clip_grad_norm_type=2.0)
    if config["optimizer"] == "adamw":
        return flow.optim.AdamW([group], lr=config["lr"], weight_decay=config["weight_decay"])
    return flow.optim.SGD([group], lr=config["lr"], momentum=config["momentum"],
                          weight_decay=config["weight_decay"])


def row_state_keys(optimizer: flow.optim.Optimizer, param: flow.nn.Parameter) -> tuple[str, ...]:
    """Names of the state tensors shaped like `param` that `optimizer` keeps for it (empty: none)."""
    for group in optimizer.param_groups:
        if not any(p is param for p in group.parameters):
            continue
        if isinstance(optimizer, flow.optim.AdamW):
            return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        if isinstance(optimizer, flow.optim.SGD):
            return ("momentum_buf",) if group["momentum"] != 0.0 else ()
        raise TypeError(f"{type(optimizer).__name__}: no known per-element state")
    return ()


def take_state_slot(optimizer: flow.optim.Optimizer, param: flow.nn.Parameter,
                    key: str) -> Optional[flow.Tensor]:
    """Remove and return the optimizer's state tensor `key` for `param` (None if it has none)."""
    return optimizer._state.get(param, {}).pop(key, None)


def put_state_slot(optimizer: flow.optim.Optimizer, param: flow.nn.Parameter, key: str,
                   value: flow.Tensor) -> None:
    """Set the optimizer's state tensor `key` for `param` (shaped like it); the next step updates it in place."""
    optimizer._state.setdefault(param, {})[key] = value
