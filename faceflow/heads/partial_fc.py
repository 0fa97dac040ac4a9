"""Partial FC (sample rate r): each step uses every positive class of the global batch plus random negatives.

Layout: the class table `weight` `[world * n, E]` (n = ceil(C / world), rows past C are padding) is a
split(0) BUFFER, not a parameter. The rows sampled for a step are copied into the split(0) Parameter
`weight_activated` `[world * S, E]` (S sampled rows per rank, the same on every rank) and the loss is
computed over them only; the next step (or `state_dict()`) writes the updated rows back into the table.
So the optimizer never sees the unsampled rows: their gradient is exactly 0 and momentum and weight
decay cannot move them. After `bind_optimizer(opt)` the optimizer state of the sampled rows (SGD momentum,
AdamW's two moments) is swapped per class through one table per state tensor (`weight_mom` for SGD;
`weight_exp_avg` and `weight_exp_avg_sq` for AdamW; the same for `bias` with softmax): exact, like
arcface_torch's first Partial FC, at one class table of memory per state tensor. The state rows are put
into the optimizer once the sampled rows' gradient exists and taken out again at the write-back, so the
state slots are not held through the forward and backward passes, where memory peaks. With
`keep_momentum=False` the optimizer restarts the state at zero for each new sample (no table). Without
`bind_optimizer` the state stays with the slot, i.e. it leaks between the classes that occupy a slot on
consecutive steps.

S = int(n * r), raised to min(n, global batch) when that is larger so that every positive always fits,
and equal on all ranks so that the sampled weight is an evenly split global tensor. Sampling is done per
rank with ordinary local tensor ops (CPU and CUDA); `fused_sampler=True` lets OneFlow's CUDA-only
`distributed_partial_fc_sample` op pick the classes instead (opt-in: it could not be run without a GPU).
Both are seeded by the run's `seed`, and `resume_sampling(step)` starts a new sample sequence for a resumed
run instead of replaying the first one (`heads/class_sampler.py`).
Copying rows between the table and `weight_activated` uses `Tensor.to_local()`, which nn.Graph does not
support: Partial FC runs eagerly.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from faceflow.runtime.flow import flow, nn

from faceflow.errors import FaceflowError
from faceflow.heads.adaptive import AdaptiveMargin
from faceflow.heads.class_sampler import FusedClassSampler, ScoreSampler
from faceflow.heads.fc import (class_weight, fit_class_rows, gather_batch, margin_softmax_loss, padded_rows,
                               padding_logit_bias)
from faceflow.heads.margins import Margins
from faceflow.train.optimizer import put_state_slot, row_state_keys, take_state_slot


def _table_name(prefix: str, key: str) -> str:
    """Buffer name of the per-class table of optimizer state `key` (`weight_mom` for SGD momentum)."""
    return f"{prefix}_{'mom' if key == 'momentum_buf' else key}"


def samples_per_rank(num_local: int, sample_rate: float, global_batch: Optional[int]) -> int:
    """S: `int(num_local * rate)`, at least min(num_local, global_batch) so every positive fits, at least 1."""
    count = int(num_local * sample_rate)
    if global_batch:
        count = max(count, min(num_local, global_batch))
    return max(1, min(num_local, count))


class PartialFC(nn.Module):
    """Partial FC head: forward(embeddings, labels) -> loss over the sampled classes (eager mode)."""

    def __init__(self, num_classes: int, embedding_size: int, margins: "Optional[Margins | AdaptiveMargin]",
                 placement: flow.placement, sample_rate: float, global_batch: Optional[int] = None,
                 fused_sampler: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.margins = margins
        self.placement = placement
        self.world = len(placement.ranks)
        self.rows = padded_rows(num_classes, self.world)
        self.num_local = self.rows // self.world
        self.num_sample = samples_per_rank(self.num_local, sample_rate, global_batch)
        split0 = flow.sbp.split(0)
        self.register_buffer("weight", class_weight(self.rows, embedding_size, placement, split0))
        self.weight_activated = nn.Parameter(
            flow.zeros(self.world * self.num_sample, embedding_size, placement=placement, sbp=split0))
        if margins is None:
            self.register_buffer("bias", flow.zeros(self.rows, placement=placement, sbp=split0))
            self.bias_activated = nn.Parameter(
                flow.zeros(self.world * self.num_sample, placement=placement, sbp=split0))
        else:
            self.bias = None
            self.bias_activated = None
        self.register_buffer("logit_bias", padding_logit_bias(num_classes, self.rows, placement),
                             persistent=False)
        self._index: Optional[flow.Tensor] = None  # this rank's sampled local rows, in weight_activated order
        self._optimizer: Optional[flow.optim.Optimizer] = None
        self._keep_momentum = True
        self._state_loaded = True  # the optimizer holds the state rows of the current sample
        self._hooked = False
        self.score_sampler = ScoreSampler(seed, flow.env.get_rank())
        self.fused_class_sampler = None
        if fused_sampler and placement.type == "cuda":  # CUDA-only kernel; not verifiable on this CPU machine
            self.fused_class_sampler = FusedClassSampler(self.world * self.num_sample, seed)

    def resume_sampling(self, step: int) -> None:
        """Sample from the stream of a run resumed after `step` updates (not the one it started with)."""
        self.score_sampler.reseed(step)
        if self.fused_class_sampler is not None:
            self.fused_class_sampler.reseed(step)

    # ----- optimizer state ----------------------------------------------------------------------
    def bind_optimizer(self, optimizer: flow.optim.Optimizer, keep_momentum: bool = True) -> None:
        """Let the head swap the per-class rows of `optimizer`'s state (SGD momentum, AdamW moments)."""
        self._optimizer = optimizer
        self._keep_momentum = keep_momentum
        if not keep_momentum:
            return
        for param, prefix in self._activated():
            for key in row_state_keys(optimizer, param):
                name = _table_name(prefix, key)
                if not hasattr(self, name):
                    self.register_buffer(name, flow.zeros_like(getattr(self, prefix)))
        if not self._hooked:  # OneFlow 0.9 gives no handle to remove a hook: register it once
            self.weight_activated.register_hook(self._load_state)
            self._hooked = True

    def _activated(self) -> list[tuple[nn.Parameter, str]]:
        """(activated parameter, name of its class table) pairs."""
        pairs = [(self.weight_activated, "weight")]
        if self.bias_activated is not None:
            pairs.append((self.bias_activated, "bias"))
        return pairs

    def _state_keys(self) -> list[tuple[nn.Parameter, str, str]]:
        """(activated parameter, optimizer state key, name of its per-class table) for every state slot."""
        if self._optimizer is None:
            return []
        return [(param, key, _table_name(prefix, key)) for param, prefix in self._activated()
                for key in row_state_keys(self._optimizer, param)]

    # ----- table <-> activated rows ---------------------------------------------------------------
    def _write_back(self) -> None:
        """Copy the (optimizer-updated) sampled rows into the tables, and their optimizer state (then drop it)."""
        if self._index is None:
            return
        with flow.no_grad():
            self.weight.to_local()[self._index] = self.weight_activated.to_local()
            if self.bias_activated is not None:
                self.bias.to_local()[self._index] = self.bias_activated.to_local()
            for param, key, table in self._state_keys():
                slot = take_state_slot(self._optimizer, param, key)  # not kept between steps: its memory
                if slot is not None and self._keep_momentum:  # is free during the next forward/backward
                    getattr(self, table).to_local()[self._index] = slot.to_local()

    def _load_rows(self, index: flow.Tensor) -> None:
        """Copy the table rows `index` (local) into the activated parameters; their state follows at backward."""
        with flow.no_grad():
            self.weight_activated.to_local().copy_(flow.index_select(self.weight.to_local(), 0, index))
            if self.bias_activated is not None:
                self.bias_activated.to_local().copy_(flow.index_select(self.bias.to_local(), 0, index))
        self._index = index
        self._state_loaded = False

    def _load_state(self, grad: Optional[flow.Tensor] = None) -> None:
        """Give the optimizer the state rows of the sample (exact mode); a gradient hook, run before the step.

        Loading once the sampled rows' gradient exists, not in forward, keeps the state slots out of the
        forward/backward peak. In reset mode the optimizer creates zero slots itself.
        """
        if self._state_loaded or self._index is None or not self._keep_momentum:
            return
        self._state_loaded = True
        split0 = flow.sbp.split(0)
        with flow.no_grad():
            for param, key, table in self._state_keys():
                rows = flow.index_select(getattr(self, table).to_local(), 0, self._index)
                put_state_slot(self._optimizer, param, key, rows.to_global(placement=self.placement, sbp=split0))

    # ----- sampling -------------------------------------------------------------------------------
    def _sample(self, labels: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        """(this rank's sampled local rows [S], remapped global labels [B] broadcast) for broadcast labels."""
        if self.fused_class_sampler is not None:
            mapped, sampled, _ = self.fused_class_sampler(self.weight, labels)
            start = flow.env.get_rank() * self.num_local
            index = sampled.to_global(sbp=flow.sbp.split(0)).to_local() - start
            return index, mapped.to_global(sbp=flow.sbp.broadcast)
        rank = flow.env.get_rank()
        start = rank * self.num_local
        labels_local = labels.to_local()
        device = labels_local.device
        in_range = (labels_local >= start) & (labels_local < start + self.num_local)
        local_labels = flow.where(in_range, labels_local - start, flow.zeros_like(labels_local))
        positives = local_labels[in_range]
        score = self.score_sampler.scores(self.num_local, device)
        valid = self.num_classes - start
        if valid < self.num_local:
            score[max(valid, 0):] = -1.0  # padding rows only when nothing else is left
        if positives.numel() > 0:
            score[positives] = 2.0
            distinct = int(flow.unique(positives).numel())
            if distinct > self.num_sample:
                raise FaceflowError(f"partial_fc: {distinct} positive classes on rank {rank} exceed the "
                                    f"{self.num_sample} sampled rows; raise sample_rate or set batch_size")
        index = flow.sort(flow.topk(score, self.num_sample).indices).values
        position = flow.zeros(self.num_local, dtype=flow.int64, device=device)
        position[index] = flow.arange(self.num_sample, dtype=flow.int64, device=device) + rank * self.num_sample
        mapped_local = flow.where(in_range, position[local_labels], flow.zeros_like(position[local_labels]))
        mapped = mapped_local.to_global(placement=self.placement, sbp=flow.sbp.partial_sum)
        return index, mapped.to_global(sbp=flow.sbp.broadcast)

    def _sampled_logit_bias(self, index: flow.Tensor) -> Optional[flow.Tensor]:
        if self.logit_bias is None:
            return None
        local = flow.index_select(self.logit_bias.to_local(), 0, index)
        return local.to_global(placement=self.placement, sbp=flow.sbp.split(0))

    @property
    def sampled_classes(self) -> np.ndarray:
        """Global class ids used by the last training step, in `weight_activated` row order."""
        if self._index is None:
            return np.zeros(0, dtype=np.int64)
        ids = self._index + flow.env.get_rank() * self.num_local
        ids = ids.to_global(placement=self.placement, sbp=flow.sbp.split(0))
        return ids.to_global(sbp=flow.sbp.broadcast).to_local().numpy()

    # ----- forward ---------------------------------------------------------------------------------
    def forward(self, embeddings: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        """Scalar loss over the sampled classes (training) or over all classes (eval, no update)."""
        embeddings = gather_batch(embeddings)
        labels = labels.to_global(sbp=flow.sbp.broadcast)
        self._write_back()
        if not self.training:
            return margin_softmax_loss(embeddings, labels, self.weight, self.bias, self.margins,
                                       self.logit_bias, self.world)
        index, mapped = self._sample(labels)
        self._load_rows(index)
        return margin_softmax_loss(embeddings, mapped, self.weight_activated, self.bias_activated,
                                   self.margins, self._sampled_logit_bias(index), self.world)

    # ----- checkpoints -----------------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001
        self._write_back()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        fit_class_rows(state_dict, prefix, tuple(self._buffers), self.num_classes, self.rows)  # tables and state
        for name in ("weight_activated", "bias_activated"):  # refilled from the table at the next step
            param = getattr(self, name)
            if prefix + name in state_dict and param is not None:
                state_dict[prefix + name] = param.detach()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._index = None


__all__ = ["PartialFC", "samples_per_rank"]
