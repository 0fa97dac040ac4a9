"""What a train or validation job asks the scheduler for: nodes, GPUs, CPUs and memory, per executor.

The amounts follow from the run (processes per node, device, the run keys `nodes`, `mem_mb_per_process`
and `cpus_per_gpu`). How they are spelled depends on who submits the job, and that choice lives here only:
- `snakemake7`: Snakemake 7's `--slurm` reads GPUs from `slurm_extra` (`--gres=gpu:G`); its cluster
  mode and local runs read the `gpu` resource (profiles/cluster-generic's sbatch line, `--resources gpu=N`).
- `slurm-plugin`: Snakemake 8+'s SLURM executor turns `gpu=G` into `--gpus=G` (per job, so a multi-node
  job asks `gres=gpu:G`, which is per node) and refuses GPU options in `slurm_extra`.
- `plugin`: any other Snakemake 8+ executor (local, cluster-generic, dry run): the `gpu` resource.
A multi-node job is an `mpi` job for both SLURM executors: the batch script runs the rule's command
itself, which starts one task per node with `srun`, instead of wrapping it in a one-task `srun`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

STYLES = ("snakemake7", "slurm-plugin", "plugin")
# default memory per training or validation process, MB: an r100 (batch 128, fp16) on 8 GPUs fits in
# 8 x 24000; a CPU process of the demo's networks needs well under 4000
MEM_MB_PER_PROCESS = {"cuda": 24000, "cpu": 4000}
CPUS_PER_GPU = 4  # default CPUs a CUDA run's job asks per GPU (its processes' input pipelines)

# `validation.device`, where validation jobs embed: `run` follows each run's device (a CUDA run's checkpoints on
# one GPU, the rest and published models on CPU), `cpu` puts every job on CPU (onnxruntime), `cuda` every job,
# published models included, on one GPU (OneFlow)
VALIDATION_DEVICES = ("run", "cpu", "cuda")

# the run keys that shape the train and validation jobs (not training keys): their JSON-schema properties,
# added to the workflow schema's run entry at load (faceflow.workflow.config_check)
JOB_KEYS: dict[str, dict] = {
    "nodes": {"type": "integer", "minimum": 1, "default": 1, "description": (
        "nodes the run trains on, `gpus` processes each; more than one makes the train job one SLURM job over "
        "that many nodes whose command starts faceflow train on each with srun (SLURM only)")},
    "mem_mb_per_process": {"type": "integer", "minimum": 1, "description": (
        "memory the train job asks per process (and a validation job in all), MB; default "
        f"{MEM_MB_PER_PROCESS['cuda']} with `device: cuda` or `auto` (fits an r100 on 8 GPUs), "
        f"{MEM_MB_PER_PROCESS['cpu']} on cpu")},
    "cpus_per_gpu": {"type": "integer", "minimum": 1, "description": (
        "CUDA runs: the most CPUs the train job asks per GPU (its `threads` each, at most this); "
        f"default {CPUS_PER_GPU}")},
}

Resource = Union[int, str, None]  # None: the job does not ask for it
# the train rule's resources (every style gives each a value or None)
RESOURCE_NAMES = ("nodes", "mem_mb", "cpus_per_task", "gpu", "gres", "slurm_extra", "mpi", "tasks", "tasks_per_gpu")


def resource_style(snakemake_version: str, executor: str | None) -> str:
    """The style (STYLES) of the Snakemake running the workflow and the name of its executor plugin."""
    if int(snakemake_version.split(".")[0]) < 8:
        return "snakemake7"
    return "slurm-plugin" if executor == "slurm" else "plugin"


def default_mem_mb_per_process(device: str) -> int:
    """MEM_MB_PER_PROCESS of a device (`auto` may be CUDA, so it gets CUDA's)."""
    return MEM_MB_PER_PROCESS["cpu" if device == "cpu" else "cuda"]


@dataclass(frozen=True)
class JobShape:
    """One training job: nodes, processes per node and, on CUDA, one GPU each; CPUs and memory per node."""

    nodes: int
    processes: int
    gpus: int  # per node, 0 on CPU
    cpus: int  # per node
    mem_mb: int  # per node

    @property
    def launcher(self) -> str:
        """The command prefix starting `faceflow train` once on every node ('' on one node)."""
        if self.nodes == 1:
            return ""
        return f"srun --nodes={self.nodes} --ntasks={self.nodes} --ntasks-per-node=1 --kill-on-bad-exit=1"

    def resources(self, style: str) -> dict[str, Resource]:
        """The job's Snakemake resources in `style` (STYLES)."""
        if style not in STYLES:
            raise ValueError(f"resource style {style!r} is not one of {', '.join(STYLES)}")
        out: dict[str, Resource] = dict.fromkeys(RESOURCE_NAMES)
        out.update(nodes=self.nodes, mem_mb=self.mem_mb, cpus_per_task=self.cpus, gpu=self.gpus)
        if self.nodes > 1:
            out.update(mpi="srun", tasks=self.nodes)
        if style == "snakemake7" and self.gpus:
            out["slurm_extra"] = f"--gres=gpu:{self.gpus}"
        if style == "slurm-plugin" and self.nodes > 1:
            out.update(gpu=None, gres=f"gpu:{self.gpus}" if self.gpus else None, tasks_per_gpu=0)
        return out


def job_shape(nodes: int, processes: int, device: str, threads: int, mem_mb_per_process: int | None,
              cpus_per_gpu: int | None) -> JobShape:
    """The shape of a run's train job: a CUDA job asks `threads` CPUs per GPU capped at `cpus_per_gpu`, a CPU
    (or `auto`) job `threads` per process; memory is `mem_mb_per_process` per process (defaults above)."""
    cuda = device == "cuda"
    per_process = min(threads, cpus_per_gpu or CPUS_PER_GPU) if cuda else threads
    mem = mem_mb_per_process or default_mem_mb_per_process(device)
    return JobShape(nodes=nodes, processes=processes, gpus=processes if cuda else 0,
                    cpus=processes * per_process, mem_mb=processes * mem)
