"""Margins that depend on the sample or on running statistics (AdaFace, CurricularFace, MagFace).

An `AdaptiveMargin` maps the clamped cosines `[B, C]`, each row's target cosine `[B]` and the embeddings'
norms `[B]` to (target logit `[B]`, logits of every class `[B, C]`); the FC heads (`heads/fc.py`) put the
target logit into its column, so one margin works in data_parallel, model_parallel and partial_fc.
Running statistics are module buffers (saved with the head's checkpoint, continued on resume); they are
updated in training only, from the global batch: the inputs are global tensors, so a batch mean on split(0)
rows is reduced over all ranks. Eagerly a step writes the buffers at once; nn.Graph keeps no in-place write
to a buffer, so in a graph the new values wait in `pending`, come out as outputs of the compiled step, and
`write_back` copies them into the buffers after it (`faceflow.train.graph.TrainGraph`).
"""
from __future__ import annotations

from typing import Iterable, Optional

from faceflow.runtime.flow import flow, nn


def _broadcast(value: flow.Tensor) -> flow.Tensor:
    """A global scalar as a broadcast `[1]` tensor (a mean over split(0) rows comes out partial_sum)."""
    value = value.reshape(1)
    return value.to_global(sbp=flow.sbp.broadcast) if value.is_global else value


def batch_mean_std(values: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
    """Mean and unbiased standard deviation of a global `[B]` tensor over the whole batch (all ranks)."""
    mean = _broadcast(values.mean())
    centred = values - mean
    count = max(int(values.shape[0]) - 1, 1)
    return mean, _broadcast(flow.sqrt((centred * centred).sum() / count))


class AdaptiveMargin(nn.Module):
    """Base of the adaptive margins: running statistics as `[1]` buffers on the head's placement."""

    def __init__(self, scale: float, placement: flow.placement) -> None:
        super().__init__()
        self.scale = float(scale)
        self.placement = placement
        self.pending: dict[str, flow.Tensor] = {}

    def running(self, name: str, initial: float) -> None:
        """Register the running statistic `name` (a broadcast `[1]` buffer starting at `initial`)."""
        self.register_buffer(name, flow.full((1,), float(initial), placement=self.placement,
                                             sbp=flow.sbp.broadcast))

    def update(self, name: str, batch_value: flow.Tensor, alpha: float) -> flow.Tensor:
        """In training, running <- alpha * batch_value + (1 - alpha) * running; returns the running value
        (written at once eagerly; in nn.Graph held in `pending` for `write_back`)."""
        running = getattr(self, name)
        if not self.training:
            return running
        with flow.no_grad():
            new = running * (1.0 - alpha) + _broadcast(batch_value.detach()) * alpha
            if new.is_lazy:
                self.pending[name] = new
                return new
            running.copy_(new)
        return running

    def forward(self, cos: flow.Tensor, target_cos: flow.Tensor,
                norms: flow.Tensor) -> tuple[flow.Tensor, flow.Tensor]:
        """(target logits [B], logits of every class [B, C]) for clamped cosines and embedding norms."""
        raise NotImplementedError

    def penalty(self, norms: flow.Tensor) -> Optional[flow.Tensor]:
        """A term added to the loss (MagFace's norm regulariser), or None."""
        return None


def adaptive_margins(module: nn.Module) -> list[AdaptiveMargin]:
    """The adaptive margins inside `module` (a head), in module order."""
    return [child for child in module.modules() if isinstance(child, AdaptiveMargin)]


def write_back(updates: Iterable[tuple[AdaptiveMargin, str]], values: Iterable[flow.Tensor]) -> None:
    """Copy a compiled step's outputs into the running statistics they were computed for."""
    with flow.no_grad():
        for (margin, name), value in zip(updates, values, strict=True):
            getattr(margin, name).copy_(value)
