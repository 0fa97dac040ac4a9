"""faceflow.runtime.slurm_nodes: a node's place in a SLURM job step, from its environment and scontrol."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

import pytest

from faceflow.errors import FaceflowError
from faceflow.runtime.slurm_nodes import slurm_placement

STEP = {"SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NUM_NODES": "3", "SLURM_NODEID": "1", "SLURM_LOCALID": "0",
        "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-09]"}


def fake_scontrol(answers: dict[tuple[str, ...], str]):
    calls: list[tuple[str, ...]] = []

    def run(args: Sequence[str]) -> str:
        calls.append(tuple(args))
        return answers[tuple(args)]

    return run, calls


def test_placement_from_the_step_and_node_0s_address() -> None:
    run, calls = fake_scontrol({
        ("show", "hostnames", "gpu[07-08]"): "gpu07\ngpu08\n",
        ("show", "node", "-o", "gpu07"): "NodeName=gpu07 Arch=x86_64 NodeAddr=10.1.0.7 NodeHostName=gpu07\n",
    })
    placement = slurm_placement(STEP, run)
    assert (placement.nnodes, placement.node_rank, placement.master_addr) == (2, 1, "10.1.0.7")
    assert calls[0] == ("show", "hostnames", "gpu[07-08]")  # the step's nodes, not the job's


def test_the_job_values_serve_when_there_is_no_step_and_the_name_when_no_address() -> None:
    env = {key: value for key, value in STEP.items() if not key.startswith("SLURM_STEP")}
    env["SLURM_NODEID"] = "0"
    run, _ = fake_scontrol({("show", "hostnames", "gpu[07-09]"): "gpu07 gpu08 gpu09",
                            ("show", "node", "-o", "gpu07"): "NodeName=gpu07 State=IDLE"})
    assert slurm_placement(env, run).master_addr == "gpu07"


@pytest.mark.parametrize("change, message", [
    ({"SLURM_LOCALID": "1"}, "more than one task on this node"),
    ({"SLURM_NODEID": None}, "SLURM_NODEID is not set"),
    ({"SLURM_NODEID": "x"}, "SLURM_NODEID='x' is not an integer"),
    ({"SLURM_NODEID": "2"}, "node 2 of 2"),
])
def test_bad_steps_are_refused_in_one_line(change: dict, message: str) -> None:
    env = {**STEP, **change}
    env = {key: value for key, value in env.items() if value is not None}
    run, _ = fake_scontrol({("show", "hostnames", "gpu[07-08]"): "gpu07 gpu08",
                            ("show", "node", "-o", "gpu07"): "NodeAddr=10.1.0.7"})
    with pytest.raises(FaceflowError, match=message):
        slurm_placement(env, run)


def test_outside_slurm_the_error_says_how_to_start_it() -> None:
    with pytest.raises(FaceflowError, match="srun --ntasks-per-node=1"):
        slurm_placement({}, lambda args: "")


def test_faceflow_train_from_slurm_outside_slurm_fails_in_one_line() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    done = subprocess.run([sys.executable, "-m", "faceflow.cli.main", "train", "demo", "--from-slurm"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("faceflow train: error: --from-slurm: SLURM_STEP_NUM_NODES")
