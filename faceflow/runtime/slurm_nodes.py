"""Where this process sits in a multi-node SLURM job step: node count, node rank and node 0's address.

`faceflow train --from-slurm` runs once per node (`srun --ntasks-per-node=1`); each copy reads its node
rank from SLURM_NODEID, the node count and node list from the step (SLURM_STEP_NUM_NODES,
SLURM_STEP_NODELIST, else the job's), and the master address from the first host of
`scontrol show hostnames NODELIST`: its NodeAddr (`scontrol show node`), which is what the other nodes
reach it at even when node names do not resolve.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from faceflow.errors import FaceflowError

Runner = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class SlurmPlacement:
    """This node's place in the job step."""

    nnodes: int
    node_rank: int
    master_addr: str


def scontrol(args: Sequence[str]) -> str:
    """stdout of `scontrol ARGS`; FaceflowError with its message when it fails."""
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise FaceflowError(f"--from-slurm: cannot run scontrol ({err})") from None
    if done.returncode != 0:
        raise FaceflowError(f"--from-slurm: scontrol {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout


def _env_int(env: Mapping[str, str], *names: str) -> int:
    for name in names:
        value = env.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                raise FaceflowError(f"--from-slurm: {name}={value!r} is not an integer") from None
    raise FaceflowError(f"--from-slurm: {names[0]} is not set (run it inside a SLURM job step: "
                        "srun --ntasks-per-node=1 faceflow train ...)")


def node_address(host: str, run: Runner = scontrol) -> str:
    """The NodeAddr SLURM reaches `host` at (the host name itself when SLURM gives none)."""
    for field in run(["show", "node", "-o", host]).split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1] or host
    return host


def slurm_placement(env: Mapping[str, str] | None = None, run: Runner = scontrol) -> SlurmPlacement:
    """This process's placement, read from the SLURM job step it runs in (one task per node)."""
    env = os.environ if env is None else env
    if env.get("SLURM_LOCALID", "0") != "0":
        raise FaceflowError("--from-slurm: more than one task on this node; start one per node "
                            "(srun --ntasks-per-node=1), faceflow starts the node's processes itself")
    nnodes = _env_int(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES")
    node_rank = _env_int(env, "SLURM_NODEID")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise FaceflowError("--from-slurm: SLURM_JOB_NODELIST is not set (not inside a SLURM job)")
    hosts = run(["show", "hostnames", nodelist]).split()
    if len(hosts) != nnodes or not 0 <= node_rank < nnodes:
        raise FaceflowError(f"--from-slurm: node {node_rank} of {nnodes}, but the node list {nodelist} "
                            f"names {len(hosts)} host(s)")
    return SlurmPlacement(nnodes=nnodes, node_rank=node_rank, master_addr=node_address(hosts[0], run))
