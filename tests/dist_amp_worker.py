"""Eager loss scaling on 2 CPU processes: the engine with the scaler forced on, one rank's shard overflowing.

`python -m faceflow.runtime.launch --nproc_per_node 2 tests/dist_amp_worker.py OUT.npz` trains the tiny
config for each of CASES with FACEFLOW_FORCE_OVERFLOW=OVERFLOW_STEP:OVERFLOW_RANK (an infinite gradient
in that rank's shard of the class weight), and resumes RESUMED from its step-3 checkpoint. Before every
step and after the last, each rank records its scaler state and checksums of its parameters; rank 0
saves every rank's records.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from faceflow.runtime.flow import flow

from faceflow.runtime.device import all_ranks_placement
from faceflow.train.amp import FORCE_OVERFLOW_ENV
from faceflow.train.engine import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from train_support import step_batches, tiny_config  # noqa: E402

CASES = [("model_parallel", 1.0), ("partial_fc", None)]  # (fc_mode, clip_grad_norm): the class weight is split
RESUMED = CASES[0]
STEPS, OVERFLOW_STEP, OVERFLOW_RANK, CHECKPOINT_STEP = 4, 2, 1, 3
FIELDS = ("scale", "good_steps", "backbone", "head")


def case_name(case: tuple) -> str:
    """Key prefix of one case in the saved results."""
    return "-".join(str(part) for part in case)


def _checksum(tensors: list[flow.Tensor]) -> float:
    """Sum of this rank's data of `tensors` (in float64): changes whenever an update moves them."""
    return float(sum(np.asarray(t.to_local().numpy(), dtype=np.float64).sum() for t in tensors))


def _snapshot(trainer: Trainer) -> list[float]:
    state = trainer.scaler.state_dict()
    head = [] if trainer.config["fc_mode"] == "partial_fc" else list(trainer.head.parameters())  # PFC re-samples
    return [state["scale"], state["good_steps"], _checksum(list(trainer.backbone.parameters())), _checksum(head)]


def train(config: dict[str, Any], out_dir: Path) -> np.ndarray:
    """Train (or resume) the run; rows of FIELDS before every step and after the last."""
    records: list[list[float]] = []
    trainer: Trainer

    def batches(config: dict[str, Any], placement: flow.placement, start: int):
        for batch in step_batches(config, placement, start):
            records.append(_snapshot(trainer))
            yield batch

    trainer = Trainer(config, out_dir, batches=batches, loss_scaling=True)
    trainer.run()
    records.append(_snapshot(trainer))
    return np.array(records)


def _every_rank(values: np.ndarray) -> np.ndarray:
    """`values` of every rank, stacked along a new first axis (collective)."""
    placement = all_ranks_placement("cpu")
    mine = flow.tensor(values[None].astype(np.float64)).to_global(placement=placement, sbp=flow.sbp.split(0))
    return mine.to_global(sbp=flow.sbp.broadcast).to_local().numpy()


def main(out_path: str) -> None:
    os.environ[FORCE_OVERFLOW_ENV] = f"{OVERFLOW_STEP}:{OVERFLOW_RANK}"
    results: dict[str, np.ndarray] = {}
    runs = Path(out_path).parent / "runs"  # the same directory for every rank: the resume reads rank 0's checkpoints
    for number, case in enumerate(CASES):
        fc_mode, clip = case
        config = tiny_config(fc_mode=fc_mode, clip_grad_norm=clip, max_steps=STEPS,
                             checkpoint_every=CHECKPOINT_STEP, sample_rate=0.5 if fc_mode == "partial_fc" else 1.0)
        out_dir = runs / str(number)
        results[case_name(case) + "/run"] = _every_rank(train(config, out_dir))
        if flow.env.get_rank() == 0:
            results[case_name(case) + "/log"] = np.array((out_dir / "train.log").read_text())
        if case != RESUMED:
            continue
        if flow.env.get_rank() == 0:
            shutil.rmtree(out_dir / "checkpoints" / f"step_{STEPS:06d}")
        flow.comm.barrier()
        results[case_name(case) + "/resumed"] = _every_rank(train(config, out_dir))
        if flow.env.get_rank() == 0:
            results[case_name(case) + "/resumed_log"] = np.array((out_dir / "train.log").read_text())
    if flow.env.get_rank() == 0:
        np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
