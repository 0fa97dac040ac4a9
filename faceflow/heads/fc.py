"""Full classification layer + margin softmax loss on global tensors: data parallel and model parallel.

data_parallel: weight `[C, E]` broadcast, embeddings/labels split(0), logits split(0).
model_parallel: weight `[world * ceil(C/world), E]` split(0) (rows past C are padding, masked out of the
softmax), embeddings and labels broadcast, logits split(1); the softmax cross entropy is written with
ordinary ops (row max, log-sum-exp, target logit by gather) so that it reduces across ranks through sbp.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from faceflow.runtime.flow import flow, nn

from faceflow.heads.adaptive import AdaptiveMargin
from faceflow.heads.margins import COS_EPS, Margins, margin_logits, margin_target

PAD_LOGIT = -1.0e30  # added to padding classes: exp() underflows to exactly 0, so they get no gradient
INIT_STD = 0.01


def padded_rows(num_classes: int, world: int) -> int:
    """Rows of a class weight split over `world` ranks: `world * ceil(C / world)` (equal shards)."""
    return world * math.ceil(num_classes / world)


def class_weight(rows: int, embedding_size: int, placement: flow.placement, sbp: flow.sbp.sbp) -> flow.Tensor:
    """A global N(0, 0.01) class-weight tensor drawn in its sbp (a shard per rank for split, identical for broadcast)."""
    return flow.randn(rows, embedding_size, placement=placement, sbp=sbp).mul_(INIT_STD)


def padding_logit_bias(num_classes: int, rows: int, placement: flow.placement) -> Optional[flow.Tensor]:
    """`[rows]` split(0): 0 for real classes, PAD_LOGIT for padding rows; None when there is no padding."""
    if rows == num_classes:
        return None
    bias = np.zeros(rows, dtype=np.float32)
    bias[num_classes:] = PAD_LOGIT
    return flow.tensor(bias, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=flow.sbp.split(0))


def fit_class_rows(state_dict: dict, prefix: str, names: tuple[str, ...], num_classes: int, rows: int) -> None:
    """Resize saved class tables to this head's row count (checkpoints from another world size).

    Rows past `num_classes` are padding, so the first `num_classes` rows are kept and zero rows appended.
    """
    for name in names:
        saved = state_dict.get(prefix + name)
        if saved is None or saved.shape[0] == rows:
            continue
        kept = saved[:num_classes]
        pad_shape = (rows - num_classes,) + tuple(saved.shape[1:])
        if saved.is_global:
            pad = flow.zeros(pad_shape, dtype=saved.dtype, placement=saved.placement, sbp=flow.sbp.broadcast)
            kept = kept.to_global(sbp=flow.sbp.broadcast)
        else:
            pad = flow.zeros(pad_shape, dtype=saved.dtype, device=saved.device)
        state_dict[prefix + name] = flow.cat([kept, pad], dim=0)


def gather_batch(embeddings: flow.Tensor) -> flow.Tensor:
    """`embeddings` as broadcast for the class-split heads, its gradient returned in the embeddings' own sbp.

    Without `grad_sbp` OneFlow 0.9 hands the backbone a broadcast gradient, and BatchNorm's backward on a
    split(0) input then mixes the ranks' batch statistics: wrong backbone gradients, NaN at 2 samples per rank.
    """
    if not embeddings.is_global or embeddings.sbp == (flow.sbp.broadcast,):
        return embeddings
    return embeddings.to_global(sbp=flow.sbp.broadcast, grad_sbp=embeddings.sbp)


def _row_max(logits: flow.Tensor, class_shards: int) -> flow.Tensor:
    """Detached row max; for class-split logits reduce each shard first so only `[B, world]` is exchanged."""
    logits = logits.detach()
    if class_shards > 1:
        batch, classes = logits.shape
        per_shard = flow.amax(logits.reshape(batch, class_shards, classes // class_shards), dim=2)
        return flow.amax(per_shard, dim=1)
    return flow.amax(logits, dim=1)


def _class_ids(weight: flow.Tensor) -> flow.Tensor:
    """`[1, rows]` row numbers of a class table, laid out like its rows (split(1) for a split(0) table)."""
    rows = weight.shape[0]
    if not weight.is_global:
        return flow.arange(rows, dtype=flow.int64, device=weight.device).unsqueeze(0)
    ids = flow.arange(rows, dtype=flow.int64, placement=weight.placement, sbp=flow.sbp.broadcast)
    return ids.to_global(sbp=weight.sbp).unsqueeze(0)


def adaptive_margin_loss(embeddings: flow.Tensor, labels: flow.Tensor, weight: flow.Tensor,
                         margin: AdaptiveMargin, logit_bias: Optional[flow.Tensor] = None,
                         class_shards: int = 1) -> flow.Tensor:
    """Mean softmax cross entropy of an adaptive margin's logits, plus its penalty (`heads/adaptive.py`).

    The target logit is computed from the gathered target class rows and written into its column, so the
    same code serves broadcast, split(1) (model parallel) and sampled (Partial FC) class tables.
    """
    norms = flow.sqrt((embeddings * embeddings).sum(dim=1))
    x = embeddings / flow.clamp(norms, min=1e-12).unsqueeze(1)
    w = nn.functional.normalize(weight, dim=1)
    cos = flow.clamp(flow.matmul(x, w, transpose_b=True), -1.0 + COS_EPS, 1.0 - COS_EPS)
    target_cos = flow.clamp((x * flow.index_select(w, 0, labels)).sum(dim=1), -1.0 + COS_EPS, 1.0 - COS_EPS)
    target, others = margin(cos, target_cos, norms)
    is_target = _class_ids(weight) == labels.to(flow.int64).unsqueeze(1)
    logits = flow.where(is_target, target.unsqueeze(1).expand_as(others), others)
    if logit_bias is not None:
        logits = logits + logit_bias
    row_max = _row_max(logits, class_shards)
    log_sum_exp = flow.log(flow.exp(logits - row_max.unsqueeze(1)).sum(dim=1)) + row_max
    loss = (log_sum_exp - target).mean()
    penalty = margin.penalty(norms)
    if penalty is not None:
        loss = loss + penalty
    return loss.to_global(sbp=flow.sbp.broadcast) if loss.is_global else loss


def margin_softmax_loss(embeddings: flow.Tensor, labels: flow.Tensor, weight: flow.Tensor,
                        bias: Optional[flow.Tensor], margins: "Optional[Margins | AdaptiveMargin]",
                        logit_bias: Optional[flow.Tensor] = None, class_shards: int = 1) -> flow.Tensor:
    """Mean softmax cross entropy of (margin) logits `embeddings @ weight.T` for integer `labels`.

    `margins=None` is the plain softmax (FC with `bias`); otherwise cosine logits with the combined margin
    or an adaptive one. `logit_bias` (per class) masks padding classes; `class_shards` > 1 when the classes
    are split(1) over ranks. A global result is broadcast.
    """
    if margins is not None and not isinstance(margins, Margins):  # in nn.Graph a module is seen through a proxy
        return adaptive_margin_loss(embeddings, labels, weight, margins, logit_bias, class_shards)
    if margins is None:
        logits = flow.matmul(embeddings, weight, transpose_b=True) + bias
    else:
        x = nn.functional.normalize(embeddings, dim=1)
        logits = margin_logits(flow.matmul(x, nn.functional.normalize(weight, dim=1), transpose_b=True), labels,
                               margins)
    if logit_bias is not None:
        logits = logits + logit_bias
    if class_shards == 1:  # all classes on each rank: OneFlow's fused op keeps one [B, C] tensor for backward
        loss = flow._C.sparse_softmax_cross_entropy(logits, labels.to(flow.int64)).mean()
        return loss.to_global(sbp=flow.sbp.broadcast) if loss.is_global else loss
    target_rows = flow.index_select(weight, 0, labels)
    if margins is None:
        target = (embeddings * target_rows).sum(dim=1) + flow.index_select(bias, 0, labels)
    else:
        target = margin_target((x * nn.functional.normalize(target_rows, dim=1)).sum(dim=1), margins)
    row_max = _row_max(logits, class_shards)
    log_sum_exp = flow.log(flow.exp(logits - row_max.unsqueeze(1)).sum(dim=1)) + row_max
    loss = (log_sum_exp - target).mean()
    # the mean over a split(0) batch (data parallel) and the softmax target gathered from split(0) class rows
    # (model parallel) come out partial_sum: every rank must hold the whole loss (the engine reads its local copy)
    return loss.to_global(sbp=flow.sbp.broadcast) if loss.is_global else loss


class FullyConnectedHead(nn.Module):
    """FC + margin softmax loss over all classes; `model_parallel` splits the class rows over ranks."""

    def __init__(self, num_classes: int, embedding_size: int, margins: "Optional[Margins | AdaptiveMargin]",
                 placement: flow.placement, model_parallel: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.margins = margins
        self.placement = placement
        self.model_parallel = model_parallel
        world = len(placement.ranks) if model_parallel else 1
        self.class_shards = world
        rows = padded_rows(num_classes, world)
        sbp = flow.sbp.split(0) if model_parallel else flow.sbp.broadcast
        self.weight = nn.Parameter(class_weight(rows, embedding_size, placement, sbp))
        if margins is None:
            self.bias = nn.Parameter(flow.zeros(rows, placement=placement, sbp=sbp))
        else:
            self.bias = None
        pad = padding_logit_bias(num_classes, rows, placement)
        self.register_buffer("logit_bias", pad, persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        fit_class_rows(state_dict, prefix, ("weight", "bias"), self.num_classes, self.weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, embeddings: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        """Scalar loss for global `embeddings` [B, E] and `labels` [B] (both split(0) over the batch)."""
        if self.model_parallel:
            embeddings = gather_batch(embeddings)
            labels = labels.to_global(sbp=flow.sbp.broadcast)
        return margin_softmax_loss(embeddings, labels, self.weight, self.bias, self.margins,
                                   self.logit_bias, self.class_shards)
