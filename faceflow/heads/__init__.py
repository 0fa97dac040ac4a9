"""Classification heads by config: `build_head(config, placement)` -> module with `forward(embeddings, labels) -> loss`.

Config keys: loss (a name of the loss registry, `heads/registry.py`), margins (null or overrides of the
loss's margins), fc_mode (data_parallel | model_parallel | partial_fc), sample_rate, num_classes,
embedding_size; optional batch_size (per process, sizes Partial FC's sample), partial_fc_fused_sampler
and seed (Partial FC's class sampling).
The config is checked by `faceflow.train.config` first. Inputs are global tensors on `placement`, batch split(0).
Importing this package loads no OneFlow: the head modules are imported when a head is built.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from faceflow.errors import ConfigError
from faceflow.heads.registry import FC_MODES, LOSSES, list_losses, margin_values, register_loss

if TYPE_CHECKING:
    from faceflow.runtime.flow import flow, nn


def _positive_int(config: Mapping[str, Any], key: str, default: Any = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return value


def build_head(config: Mapping[str, Any], placement: "flow.placement") -> "nn.Module":
    """The FC + loss head the config asks for, its weights global tensors on `placement`."""
    loss = config.get("loss", "arcface")
    spec = LOSSES.get(loss)
    margins = margin_values(loss, config.get("margins"))
    if spec.head is not None:
        return spec.head(config, placement, margins)
    from faceflow.heads.margins import Margins

    return fc_head(config, placement, None if margins is None else Margins(**margins))


def fc_head(config: Mapping[str, Any], placement: "flow.placement", margins: Any) -> "nn.Module":
    """The class layer of the config's fc_mode with `margins` (Margins, an AdaptiveMargin, or None: softmax)."""
    num_classes = _positive_int(config, "num_classes")
    embedding_size = _positive_int(config, "embedding_size", 512)
    fc_mode = config.get("fc_mode", "data_parallel")
    if fc_mode not in FC_MODES:
        raise ConfigError(f"fc_mode: expected one of {', '.join(FC_MODES)}, got {fc_mode!r}")
    if fc_mode != "partial_fc":
        from faceflow.heads.fc import FullyConnectedHead

        return FullyConnectedHead(num_classes, embedding_size, margins, placement,
                                  model_parallel=fc_mode == "model_parallel")
    from faceflow.heads.partial_fc import PartialFC

    batch = config.get("batch_size")
    global_batch = _positive_int(config, "batch_size") * len(placement.ranks) if batch is not None else None
    return PartialFC(num_classes, embedding_size, margins, placement, float(config.get("sample_rate", 1.0)),
                     global_batch, fused_sampler=bool(config.get("partial_fc_fused_sampler", False)),
                     seed=int(config.get("seed", 0)))


__all__ = ["FC_MODES", "build_head", "fc_head", "list_losses", "margin_values", "register_loss"]
