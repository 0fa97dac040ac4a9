"""The one place where faceflow decides CPU vs CUDA, placements and process topology.

Which GPUs a CUDA run's processes see is settled before OneFlow loads, by `runtime/gpus.py`: the ones a
scheduler assigned, or GPUs leased on this machine; here each process takes the one of its local rank.
"""
from __future__ import annotations

from faceflow.runtime.flow import flow

DEVICES = ("cpu", "cuda")


def resolve_device(requested: str) -> str:
    """Return 'cpu' or 'cuda' for a config value 'cpu' | 'cuda' | 'auto'; error if CUDA is asked for but absent."""
    if requested == "auto":
        return "cuda" if flow.cuda.is_available() else "cpu"
    if requested not in DEVICES:
        raise ValueError(f"device: expected one of cpu, cuda, auto, got {requested!r}")
    if requested == "cuda" and not flow.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available (set device: cpu)")
    return requested


def visible_gpus() -> int:
    """Number of CUDA devices this process can use (0 without CUDA)."""
    return int(flow.cuda.device_count()) if flow.cuda.is_available() else 0


def wait_for_queued_work() -> None:
    """Block until every operation queued on OneFlow's runtime has run (ops return before they compute:
    a step's loss is ready while its backward and update still run, random init kernels trail the seed)."""
    flow._oneflow_internal.eager.Sync()


def world_size() -> int:
    """Number of processes in this run (1 when not launched through the distributed launcher)."""
    return int(flow.env.get_world_size())


def rank() -> int:
    """Global rank of this process (0 when single-process)."""
    return int(flow.env.get_rank())


def local_rank() -> int:
    """Rank of this process on its node; selects the GPU on CUDA."""
    return int(flow.env.get_local_rank())


def local_world_size() -> int:
    """Number of processes of this run on this node (runs have the same count on every node)."""
    return max(1, world_size() // max(1, int(flow.env.get_node_size())))


def local_device(device: str) -> flow.device:
    """The device for this process's local tensors: its own GPU on CUDA, the CPU otherwise."""
    if device == "cuda":
        return flow.device("cuda", local_rank())
    return flow.device("cpu")


def all_ranks_placement(device: str) -> flow.placement:
    """Placement over every process of the run, for global (model-parallel) tensors."""
    return flow.placement(device, ranks=list(range(world_size())))
