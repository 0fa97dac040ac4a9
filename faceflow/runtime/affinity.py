"""CPU affinity for the processes of a CPU run: each local rank gets its own slice of the cores.

Several OneFlow processes on one node's CPUs each run a main thread, a VM thread and compute threads
that wait by yielding; left to float, they preempt each other across every core. Pinning local rank r to
the r-th equal slice of the cores this process may use (its affinity mask, which honours SLURM or
cgroup CPU sets) keeps each process's threads together (bench/affinity.py measures the gain). CUDA runs are left alone (their CPU side is the input pipeline).
"""
from __future__ import annotations

import os
from pathlib import Path


def cpu_share(local_rank: int, local_world: int, allowed: list[int]) -> list[int] | None:
    """Local rank `local_rank`'s equal slice of `allowed` (sorted CPU ids), or None when there is no
    slice to give: one process, or fewer CPUs than processes."""
    if local_world <= 1 or len(allowed) < local_world or not 0 <= local_rank < local_world:
        return None
    per_rank = len(allowed) // local_world
    return allowed[local_rank * per_rank:(local_rank + 1) * per_rank]


def pin_process(cpus: list[int]) -> None:
    """Restrict every existing thread of this process to `cpus` (threads started later inherit the
    mask of the thread that starts them)."""
    for task in Path("/proc/self/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, FileNotFoundError):  # the thread ended meanwhile
            continue


def pin_local_rank(local_rank: int, local_world: int) -> list[int] | None:
    """Pin this process to its share of the CPUs it may use; returns the CPUs, or None if left alone."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    share = cpu_share(local_rank, local_world, sorted(os.sched_getaffinity(0)))
    if share is not None:
        pin_process(share)
    return share


__all__ = ["cpu_share", "pin_local_rank", "pin_process"]
