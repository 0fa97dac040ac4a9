"""The nn.Graph form of one training step (forward, loss, backward, optimizer update, LR schedule, AMP)."""
from __future__ import annotations

from faceflow.runtime.flow import flow

from faceflow.heads.adaptive import adaptive_margins, write_back


class TrainGraph(flow.nn.Graph):
    """Compiled train step: `graph.step(images, labels) -> loss`; optimizer and schedule live in the graph.

    The running statistics of an adaptive margin (AdaFace, CurricularFace) leave the graph as extra outputs
    and are written into the head's buffers after each step, as an eager step writes them in place.
    """

    def __init__(self, backbone: flow.nn.Module, head: flow.nn.Module, optimizer: flow.optim.Optimizer,
                 scheduler=None, amp: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.margins = adaptive_margins(head)
        self.updates: list = []
        self.add_optimizer(optimizer, lr_sch=scheduler)
        if amp:
            self.config.enable_amp(True)
            self.set_grad_scaler(flow.amp.GradScaler(
                init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000))

    def build(self, images: flow.Tensor, labels: flow.Tensor) -> tuple[flow.Tensor, ...]:
        loss = self.head(self.backbone(images), labels)
        loss.backward()
        self.updates = [(margin, name) for margin in self.margins for name in margin.pending]
        return (loss, *[margin.pending[name] for margin, name in self.updates])

    def step(self, images: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        """One compiled step; the running statistics it computed are written back; returns the loss."""
        loss, *statistics = self(images, labels)
        write_back(self.updates, statistics)
        return loss
