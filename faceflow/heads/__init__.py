"""Classification heads by config: `build_head(config, placement)` -> module with `forward(embeddings, labels) -> loss`.

Config keys: loss (softmax | nsoftmax | sphereface | arcface | cosface | combined), margins (null or
{m1, m2, m3, s} overrides), fc_mode (data_parallel | model_parallel | partial_fc), sample_rate,
num_classes, embedding_size; optional batch_size (per process, sizes Partial FC's sample), seed (Partial
FC's class sampling) and graph (Partial FC is eager-only). Inputs are global tensors on `placement`, batch split(0).
"""
from __future__ import annotations

from typing import Any, Mapping

from faceflow.runtime.flow import flow, nn

from faceflow.errors import ConfigError
from faceflow.heads.fc import FullyConnectedHead, margin_softmax_loss
from faceflow.heads.margins import LOSS_MARGINS, Margins, margin_logits, margin_target, resolve_margins
from faceflow.heads.partial_fc import PartialFC

FC_MODES = ("data_parallel", "model_parallel", "partial_fc")


def _positive_int(config: Mapping[str, Any], key: str, default: Any = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return value


def build_head(config: Mapping[str, Any], placement: flow.placement) -> nn.Module:
    """The FC + loss head the config asks for, its weights global tensors on `placement`."""
    loss = config.get("loss", "arcface")
    margins = resolve_margins(loss, config.get("margins"))
    num_classes = _positive_int(config, "num_classes")
    embedding_size = _positive_int(config, "embedding_size", 512)
    fc_mode = config.get("fc_mode", "data_parallel")
    if fc_mode not in FC_MODES:
        raise ConfigError(f"fc_mode: expected one of {', '.join(FC_MODES)}, got {fc_mode!r}")
    if fc_mode != "partial_fc":
        return FullyConnectedHead(num_classes, embedding_size, margins, placement,
                                  model_parallel=fc_mode == "model_parallel")
    rate = config.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < rate <= 1.0:
        raise ConfigError(f"sample_rate: expected a number in (0, 1], got {rate!r}")
    if config.get("graph"):
        raise ConfigError("fc_mode: partial_fc runs in eager mode only (set graph: false, or use model_parallel)")
    batch = config.get("batch_size")
    global_batch = _positive_int(config, "batch_size") * len(placement.ranks) if batch is not None else None
    return PartialFC(num_classes, embedding_size, margins, placement, float(rate), global_batch,
                     fused_sampler=bool(config.get("partial_fc_fused_sampler", False)),
                     seed=int(config.get("seed", 0)))


__all__ = ["FC_MODES", "FullyConnectedHead", "LOSS_MARGINS", "Margins", "PartialFC", "build_head",
           "margin_logits", "margin_softmax_loss", "margin_target", "resolve_margins"]
