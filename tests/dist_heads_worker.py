"""Head computations shared by the head tests: run in-process (1 rank) or under the launcher (N ranks).

`python -m faceflow.runtime.launch --nproc_per_node 2 tests/dist_heads_worker.py OUT.npz` runs every case
on 2 CPU processes and rank 0 saves losses and gradients; the tests compare them with `run_case` in one process.
"""
from __future__ import annotations

import sys
from typing import Any

import faceflow  # noqa: F401
import numpy as np
import oneflow as flow
from oneflow import nn

from faceflow.heads import PartialFC, build_head
from faceflow.runtime.device import all_ranks_placement

BATCH, IN_FEATURES, EMB = 8, 16, 8
CLASSES = 11  # not a multiple of 2 ranks: exercises the padding rows
MANY_CLASSES = 101  # for sample rates < 1 (the sample is at least the global batch)
CASES = [("model_parallel", "arcface", 1.0, CLASSES), ("model_parallel", "combined", 1.0, CLASSES),
         ("model_parallel", "softmax", 1.0, CLASSES), ("model_parallel", "sphereface", 1.0, CLASSES),
         ("partial_fc", "arcface", 1.0, CLASSES), ("partial_fc", "softmax", 1.0, CLASSES),
         ("partial_fc", "cosface", 0.3, MANY_CLASSES), ("data_parallel", "cosface", 1.0, CLASSES)]


def case_name(case: tuple) -> str:
    """Key prefix of one case in the saved results."""
    return "-".join(str(part) for part in case)


def problem(classes: int = CLASSES, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs, labels, backbone weight and class weight/bias for one comparison."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(BATCH, IN_FEATURES)).astype(np.float32),
        "labels": np.array([0, 3, 10, 3, 7, 1, 5, 9], dtype=np.int64),
        "backbone": (rng.normal(size=(EMB, IN_FEATURES)) * 0.3).astype(np.float32),
        "weight": (rng.normal(size=(classes, EMB)) * 0.5).astype(np.float32),
        "bias": (rng.normal(size=classes) * 0.1).astype(np.float32),
    }


def _global(array: np.ndarray, placement: flow.placement, sbp: Any) -> flow.Tensor:
    return flow.tensor(array, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=sbp)


def _numpy(tensor: flow.Tensor) -> np.ndarray:
    return tensor.to_global(sbp=flow.sbp.broadcast).to_local().numpy()


def set_class_weight(head: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
    """Write the first C rows of the head's class table (padding rows stay as initialized)."""
    with flow.no_grad():
        for name, values in (("weight", weight), ("bias", bias)):
            table = getattr(head, name, None)
            if table is None:
                continue
            full = _numpy(table).copy()
            full[: len(values)] = values
            table.copy_(_global(full, table.placement, table.sbp))


def run_case(fc_mode: str, loss: str, rate: float, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loss, backbone-weight gradient and per-class weight gradient of backbone + head on `data`."""
    placement = all_ranks_placement("cpu")
    flow.manual_seed(1)
    classes = len(data["weight"])
    world = len(placement.ranks)
    config = {"loss": loss, "margins": None, "fc_mode": fc_mode, "sample_rate": rate,
              "num_classes": classes, "embedding_size": EMB, "batch_size": BATCH // world}
    head = build_head(config, placement)
    set_class_weight(head, data["weight"], data["bias"])
    backbone = nn.Linear(IN_FEATURES, EMB, bias=False).to_global(placement=placement, sbp=flow.sbp.broadcast)
    with flow.no_grad():
        backbone.weight.copy_(_global(data["backbone"], placement, flow.sbp.broadcast))
    x = _global(data["x"], placement, flow.sbp.split(0))
    labels = _global(data["labels"], placement, flow.sbp.split(0))
    value = head(backbone(x), labels)
    value.backward()
    class_grad = np.zeros((classes, EMB), dtype=np.float32)
    if isinstance(head, PartialFC):
        sampled = head.sampled_classes
        grad = _numpy(head.weight_activated.grad)
        keep = sampled < classes
        class_grad[sampled[keep]] = grad[keep]
    else:
        sampled = np.arange(classes)
        class_grad = _numpy(head.weight.grad)[:classes]
    return {"loss": np.array(float(_numpy(value))), "backbone_grad": _numpy(backbone.weight.grad),
            "class_grad": class_grad, "sampled": sampled}


GRAPH_LR = 0.1


def run_graph_case(fc_mode: str, loss: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One nn.Graph step (forward, backward, plain SGD lr 0.1): loss and the updated weights."""
    placement = all_ranks_placement("cpu")
    classes = len(data["weight"])
    config = {"loss": loss, "margins": None, "fc_mode": fc_mode, "num_classes": classes, "embedding_size": EMB}
    head = build_head(config, placement)
    set_class_weight(head, data["weight"], data["bias"])
    backbone = nn.Linear(IN_FEATURES, EMB, bias=False).to_global(placement=placement, sbp=flow.sbp.broadcast)
    with flow.no_grad():
        backbone.weight.copy_(_global(data["backbone"], placement, flow.sbp.broadcast))
    optimizer = flow.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=GRAPH_LR)

    class TrainStep(nn.Graph):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.head = backbone, head
            self.add_optimizer(optimizer)

        def build(self, x: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
            value = self.head(self.backbone(x), labels)
            value.backward()
            return value

    value = TrainStep()(_global(data["x"], placement, flow.sbp.split(0)),
                        _global(data["labels"], placement, flow.sbp.split(0)))
    return {"loss": np.array(float(_numpy(value))), "backbone": _numpy(backbone.weight),
            "weight": _numpy(head.weight)[:classes]}


def main(out_path: str) -> None:
    """Run every case on this process group; rank 0 writes `out_path` (npz, keys `{case}/{field}`)."""
    results: dict[str, np.ndarray] = {}
    for case in CASES:
        fc_mode, loss, rate, classes = case
        for field, value in run_case(fc_mode, loss, rate, problem(classes)).items():
            results[f"{case_name(case)}/{field}"] = value
    for fc_mode in ("model_parallel", "data_parallel"):
        for field, value in run_graph_case(fc_mode, "arcface", problem()).items():
            results[f"graph-{fc_mode}/{field}"] = value
    dp_head = build_head({"loss": "arcface", "fc_mode": "data_parallel", "num_classes": CLASSES,
                          "embedding_size": EMB}, all_ranks_placement("cpu"))
    per_rank = dp_head.weight.to_local().to_global(placement=dp_head.weight.placement, sbp=flow.sbp.split(0))
    results["data_parallel_init_per_rank"] = _numpy(per_rank).reshape(-1, CLASSES, EMB)
    if flow.env.get_rank() == 0:
        np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
