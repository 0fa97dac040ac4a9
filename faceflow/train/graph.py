"""The nn.Graph form of one training step (forward, loss, backward, optimizer update, LR schedule, AMP)."""
from __future__ import annotations

from faceflow.runtime.flow import flow


class TrainGraph(flow.nn.Graph):
    """Compiled train step: `graph(images, labels) -> loss`; optimizer and schedule live in the graph."""

    def __init__(self, backbone: flow.nn.Module, head: flow.nn.Module, optimizer: flow.optim.Optimizer,
                 scheduler, amp: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.add_optimizer(optimizer, lr_sch=scheduler)
        if amp:
            self.config.enable_amp(True)
            self.set_grad_scaler(flow.amp.GradScaler(
                init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000))

    def build(self, images: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
        loss = self.head(self.backbone(images), labels)
        loss.backward()
        return loss
