"""Head computations shared by the head tests: run in-process (1 rank) or under the launcher (N ranks).

`python -m faceflow.runtime.launch --nproc_per_node 2 tests/dist_heads_worker.py OUT.npz` runs every case
on 2 CPU processes and rank 0 saves losses and gradients; the tests compare them with `run_case` in one process.
`... dist_heads_worker.py OUT.npz train` instead runs the tiny training runs of TRAIN_CASES (engine + mbf).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from faceflow.runtime.flow import flow, nn

from faceflow.heads import build_head
from faceflow.heads.partial_fc import PartialFC
from faceflow.runtime.device import all_ranks_placement
from faceflow.train.graph import TrainGraph

BATCH, IN_FEATURES, EMB = 8, 16, 8
CLASSES = 11  # not a multiple of 2 ranks: exercises the padding rows
MANY_CLASSES = 101  # for sample rates < 1 (the sample is at least the global batch)
CASES = [("model_parallel", "arcface", 1.0, CLASSES), ("model_parallel", "combined", 1.0, CLASSES),
         ("model_parallel", "softmax", 1.0, CLASSES), ("model_parallel", "sphereface", 1.0, CLASSES),
         ("partial_fc", "arcface", 1.0, CLASSES), ("partial_fc", "softmax", 1.0, CLASSES),
         ("partial_fc", "cosface", 0.3, MANY_CLASSES), ("data_parallel", "cosface", 1.0, CLASSES)]
# the adaptive margins (running statistics of the global batch, norm-dependent margins) in every fc_mode
CASES += [(fc_mode, loss, 1.0, CLASSES) for loss in ("adaface", "curricularface", "magface")
          for fc_mode in ("data_parallel", "model_parallel", "partial_fc")]


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
    running = {f"running_{name}": _numpy(buffer) for name, buffer in head.named_buffers()
               if name.startswith("margins.")}  # the adaptive margins' statistics after the step
    return {"loss": np.array(float(_numpy(value))), "backbone_grad": _numpy(backbone.weight.grad),
            "class_grad": class_grad, "sampled": sampled, **running}


GRAPH_LR = 0.1
# (fc_mode, loss) of the nn.Graph steps; AdaFace and CurricularFace keep running statistics
GRAPH_CASES = [("model_parallel", "arcface"), ("data_parallel", "arcface"), ("model_parallel", "adaface"),
               ("model_parallel", "curricularface")]


def run_graph_case(fc_mode: str, loss: str, data: dict[str, np.ndarray],
                   batchnorm: bool = False) -> dict[str, np.ndarray]:
    """One step of training's nn.Graph (forward, backward, plain SGD lr 0.1): loss, the updated weights and the
    adaptive margins' running statistics (`batchnorm`: the Linear + BatchNorm1d backbone of `run_bn_case`)."""
    placement = all_ranks_placement("cpu")
    classes = len(data["weight"])
    config = {"loss": loss, "margins": None, "fc_mode": fc_mode, "num_classes": classes, "embedding_size": EMB}
    head = build_head(config, placement)
    set_class_weight(head, data["weight"], data["bias"])
    if batchnorm:
        backbone = bn_backbone(placement, data["backbone"])
        linear = backbone[0]
    else:
        backbone = linear = nn.Linear(IN_FEATURES, EMB, bias=False).to_global(placement=placement,
                                                                               sbp=flow.sbp.broadcast)
        with flow.no_grad():
            backbone.weight.copy_(_global(data["backbone"], placement, flow.sbp.broadcast))
    optimizer = flow.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=GRAPH_LR)
    value = TrainGraph(backbone, head, optimizer).step(_global(data["x"], placement, flow.sbp.split(0)),
                                                       _global(data["labels"], placement, flow.sbp.split(0)))
    running = {f"running_{name}": _numpy(buffer) for name, buffer in head.named_buffers()
               if name.startswith("margins.")}  # written back after the compiled step
    return {"loss": np.array(float(_numpy(value))), "backbone": _numpy(linear.weight),
            "weight": _numpy(head.weight)[:classes], **running}


BN_CASES = [("model_parallel", "arcface"), ("model_parallel", "softmax"), ("partial_fc", "cosface"),
            ("data_parallel", "cosface")]
BN_RANKS = 2  # the batch is normalized in this many slices, as BatchNorm on split(0) does per rank


def bn_backbone(placement: flow.placement, weight: np.ndarray) -> nn.Module:
    """Linear + BatchNorm1d: BatchNorm on a split(0) batch normalizes each rank's slice (like the fc1 layer)."""
    backbone = nn.Sequential(nn.Linear(IN_FEATURES, EMB, bias=False), nn.BatchNorm1d(EMB))
    backbone = backbone.to_global(placement=placement, sbp=flow.sbp.broadcast)
    with flow.no_grad():
        backbone[0].weight.copy_(_global(weight, placement, flow.sbp.broadcast))
    return backbone


def run_bn_case(fc_mode: str, loss: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Loss (also each rank's local copy), BatchNorm backbone and class gradients; on one process the
    batch is normalized in BN_RANKS slices, as the ranks of a 2-process run do."""
    placement = all_ranks_placement("cpu")
    flow.manual_seed(1)
    world = len(placement.ranks)
    classes = len(data["weight"])
    config = {"loss": loss, "margins": None, "fc_mode": fc_mode, "num_classes": classes, "embedding_size": EMB,
              "batch_size": BATCH // world}
    head = build_head(config, placement)
    set_class_weight(head, data["weight"], data["bias"])
    backbone = bn_backbone(placement, data["backbone"])
    labels = _global(data["labels"], placement, flow.sbp.split(0))
    if world == 1:
        slices = np.split(data["x"], BN_RANKS)
        embeddings = flow.cat([backbone(_global(part, placement, flow.sbp.broadcast)) for part in slices])
    else:
        embeddings = backbone(_global(data["x"], placement, flow.sbp.split(0)))
    value = head(embeddings, labels)
    value.backward()
    local = flow.tensor(value.to_local().numpy().reshape(1)).to_global(placement=placement, sbp=flow.sbp.split(0))
    class_table = head.weight_activated if isinstance(head, PartialFC) else head.weight
    return {"loss": np.array(float(_numpy(value))), "local_loss": _numpy(local),
            "backbone_grad": _numpy(backbone[0].weight.grad), "class_grad": _numpy(class_table.grad)[:classes]}


PFC_STEPS, PFC_LR, PFC_MU, PFC_WD = 3, 0.1, 0.9, 5e-4


def run_pfc_momentum_steps(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PFC_STEPS SGD steps of Partial FC 0.3 with exact per-class momentum, a new batch each step: the
    initial class table, each step's sampled classes and their gradient rows, and the final class tables."""
    placement = all_ranks_placement("cpu")
    flow.manual_seed(1)
    classes = len(data["weight"])
    world = len(placement.ranks)
    head = build_head({"loss": "cosface", "margins": None, "fc_mode": "partial_fc", "sample_rate": 0.3,
                       "num_classes": classes, "embedding_size": EMB, "batch_size": BATCH // world}, placement)
    set_class_weight(head, data["weight"], data["bias"])
    optimizer = flow.optim.SGD(head.parameters(), lr=PFC_LR, momentum=PFC_MU, weight_decay=PFC_WD)
    head.bind_optimizer(optimizer)
    results = {"initial": _numpy(head.weight)}
    rng = np.random.default_rng(7)
    embed = data["backbone"].T
    for step in range(PFC_STEPS):
        x = rng.normal(size=(BATCH, IN_FEATURES)).astype(np.float32) @ embed
        labels = rng.integers(0, classes, BATCH)
        value = head(_global(x, placement, flow.sbp.split(0)), _global(labels, placement, flow.sbp.split(0)))
        value.backward()
        results[f"sampled{step}"] = head.sampled_classes
        results[f"grad{step}"] = _numpy(head.weight_activated.grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    state = head.state_dict()
    results["weight"] = _numpy(state["weight"])
    results["weight_mom"] = _numpy(state["weight_mom"])
    return results


# (fc_mode, loss, batch_size per rank, graph): the tiny mbf runs that went NaN on 2 processes
TRAIN_CASES = [("model_parallel", "cosface", 2, False), ("model_parallel", "arcface", 2, True),
               ("model_parallel", "softmax", 2, False), ("data_parallel", "cosface", 2, False)]
TRAIN_STEPS = 3


def train_case_name(case: tuple) -> str:
    """Key prefix of one training run in the saved results."""
    return "train-" + "-".join(str(part) for part in case)


def run_train_case(case: tuple, out_dir: Path) -> np.ndarray:
    """Per-step losses of the tiny config trained on this process group (NaN once it diverged)."""
    from train_support import step_batches, tiny_config

    from faceflow.train.engine import Trainer, TrainingDiverged

    fc_mode, loss, batch_size, graph = case
    config = tiny_config(fc_mode=fc_mode, loss=loss, margins=None if loss == "softmax" else {"s": 8.0},
                         batch_size=batch_size, graph=graph, max_steps=TRAIN_STEPS, checkpoint_every=100)
    trainer = Trainer(config, out_dir, batches=step_batches)
    try:
        trainer.run()
    except TrainingDiverged:
        pass
    losses = np.full(TRAIN_STEPS, np.nan, dtype=np.float64)
    losses[: len(trainer.losses)] = trainer.losses
    return losses


def main_train(out_path: str) -> None:
    """Run TRAIN_CASES on this process group; every rank records its losses (they must agree)."""
    results: dict[str, np.ndarray] = {}
    placement = all_ranks_placement("cpu")
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as scratch:
        for number, case in enumerate(TRAIN_CASES):
            losses = run_train_case(case, Path(scratch) / str(number))
            per_rank = flow.tensor(losses.reshape(1, -1)).to_global(placement=placement, sbp=flow.sbp.split(0))
            results[train_case_name(case) + "/losses"] = _numpy(per_rank)
    if flow.env.get_rank() == 0:
        np.savez(out_path, **results)


def main(out_path: str) -> None:
    """Run every case on this process group; rank 0 writes `out_path` (npz, keys `{case}/{field}`)."""
    results: dict[str, np.ndarray] = {}
    for case in CASES:
        fc_mode, loss, rate, classes = case
        for field, value in run_case(fc_mode, loss, rate, problem(classes)).items():
            results[f"{case_name(case)}/{field}"] = value
    for fc_mode, loss in GRAPH_CASES:
        for field, value in run_graph_case(fc_mode, loss, problem()).items():
            results[f"graph-{fc_mode}-{loss}/{field}"] = value
    for fc_mode, loss in BN_CASES:
        for field, value in run_bn_case(fc_mode, loss, problem()).items():
            results[f"bn-{fc_mode}-{loss}/{field}"] = value
    for field, value in run_graph_case("model_parallel", "arcface", problem(), batchnorm=True).items():
        results[f"graph-bn-model_parallel/{field}"] = value
    for field, value in run_pfc_momentum_steps(problem(MANY_CLASSES)).items():
        results[f"pfc-momentum/{field}"] = value
    dp_head = build_head({"loss": "arcface", "fc_mode": "data_parallel", "num_classes": CLASSES,
                          "embedding_size": EMB}, all_ranks_placement("cpu"))
    per_rank = dp_head.weight.to_local().to_global(placement=dp_head.weight.placement, sbp=flow.sbp.split(0))
    results["data_parallel_init_per_rank"] = _numpy(per_rank).reshape(-1, CLASSES, EMB)
    if flow.env.get_rank() == 0:
        np.savez(out_path, **results)


if __name__ == "__main__":
    if sys.argv[2:] == ["train"]:
        main_train(sys.argv[1])
    else:
        main(sys.argv[1])
