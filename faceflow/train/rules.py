"""Rules across training-config keys: every combination that cannot run is refused here, before any process starts.

Three stages, each a plain function of the config (no OneFlow):
- `check_config(config)`: the config alone (run by `validate_config`, so by `faceflow train` and by the
  workflow plan at `snakemake -n` time). Rules that depend on the device run here when `device` is cpu
  or cuda; for `auto` they wait for `check_run`, since only the training machine knows whether CUDA is there.
- `check_run(config, world_size, device)`: once the world size and the resolved device are known (the
  workflow plan for cpu/cuda runs; `faceflow train` before it launches workers; the trainer).
- `check_train_data(config, world_size)`: the files the run reads (OFRecord parts, validation benchmarks),
  and `check_gpus(processes, gpus)` for a CUDA run: checked by `faceflow train` before it launches workers.
Each refusal is one ConfigError line that starts with a key and names the other keys involved.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

from faceflow.errors import ConfigError
from faceflow.heads.registry import margin_values
from faceflow.models.registry import CONFIG_OPTIONS, model_declaration

Config = dict[str, Any]


def total_steps(config: Config, world_size: int) -> int:
    """Number of optimizer steps of the run: max_steps, or epochs over num_images."""
    if config["max_steps"] is not None:
        return int(config["max_steps"])
    if not config["num_images"]:
        raise ConfigError("num_images: needed to turn epochs into steps")
    global_batch = config["batch_size"] * world_size
    return max(1, int(math.ceil(config["epochs"] * config["num_images"] / global_batch)))


def _length(config: Config) -> None:
    if (config["max_steps"] is None) == (config["epochs"] is None):
        raise ConfigError("max_steps: set exactly one of max_steps and epochs")


def _lr_steps(config: Config) -> None:
    steps, scales = config["lr_steps"], config["scales"]
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        raise ConfigError(f"lr_steps: must be strictly increasing, got {steps!r}")
    if len(scales) != len(steps):
        raise ConfigError(f"scales: needs one value per lr_steps entry ({len(steps)}), got {len(scales)}")
    if config["lr_schedule"] != "multistep" and steps:
        raise ConfigError(f"lr_steps: only lr_schedule: multistep uses lr_steps and scales "
                          f"(lr_schedule is {config['lr_schedule']})")


def _warmup_before_lr_steps(config: Config) -> None:
    warmup, steps = int(config["warmup_steps"]), config["lr_steps"]
    if config["lr_schedule"] == "multistep" and steps and steps[0] <= warmup:
        raise ConfigError(f"lr_steps: first step {steps[0]} must come after warmup_steps {warmup}")


def _margins(config: Config) -> None:
    margin_values(config["loss"], config["margins"])


def _network_kwargs(config: Config) -> None:
    parameters = model_declaration(config["network"]).parameters
    for name in config["network_kwargs"]:
        if name in CONFIG_OPTIONS:
            raise ConfigError(f"network_kwargs.{name}: set it as the config key {name}")
        if parameters is not None and name not in parameters:
            options = ", ".join(p for p in parameters if p not in CONFIG_OPTIONS) or "none"
            raise ConfigError(f"network_kwargs.{name}: not an option of network {config['network']} "
                              f"(options: {options})")


def _partial_fc_keys(config: Config) -> None:
    if config["fc_mode"] == "partial_fc":
        return
    if config["sample_rate"] < 1.0:
        raise ConfigError(f"sample_rate: < 1.0 needs fc_mode: partial_fc (fc_mode is {config['fc_mode']})")
    if config["partial_fc_fused_sampler"]:
        raise ConfigError(f"partial_fc_fused_sampler: needs fc_mode: partial_fc (fc_mode is {config['fc_mode']})")
    if config["partial_fc_momentum"] != "exact":
        raise ConfigError(f"partial_fc_momentum: {config['partial_fc_momentum']} needs fc_mode: partial_fc "
                          f"(fc_mode is {config['fc_mode']})")


def _graph_partial_fc(config: Config) -> None:
    if config["graph"] and config["fc_mode"] == "partial_fc":
        raise ConfigError("fc_mode: partial_fc runs in eager mode only: set graph: false, "
                          "or use fc_mode: model_parallel with graph: true")


def _graph_freeze(config: Config) -> None:
    if config["graph"] and config["freeze_backbone_steps"]:
        raise ConfigError("freeze_backbone_steps: needs graph: false (a compiled graph cannot stop updating "
                          "the backbone)")


def _validation(config: Config) -> None:
    for name, path in config["val_benchmarks"].items():
        if not isinstance(path, str):
            raise ConfigError(f"val_benchmarks.{name}: expected a path to a .bin file or OFRecord directory, "
                              f"got {path!r}")
    if config["validate_every"] > 0 and not config["val_benchmarks"]:
        raise ConfigError("val_benchmarks: validate_every > 0 needs at least one benchmark")


STATIC_RULES: tuple[Callable[[Config], None], ...] = (
    _length, _lr_steps, _warmup_before_lr_steps, _margins, _network_kwargs, _partial_fc_keys,
    _graph_partial_fc, _graph_freeze, _validation,
)


def check_device(config: Config, device: str) -> None:
    """Rules that depend on the device the run trains on (`cpu` or `cuda`, after resolving `auto`)."""
    if device == "cuda":
        return
    if config["fp16"]:
        raise ConfigError(f"fp16: mixed precision needs device: cuda (the run trains on {device}; set fp16: false)")
    if config["partial_fc_fused_sampler"]:
        raise ConfigError(f"partial_fc_fused_sampler: the fused sampler is a CUDA kernel, it needs device: cuda "
                          f"(the run trains on {device}; set partial_fc_fused_sampler: false)")


def check_config(config: Config) -> None:
    """Every rule the config alone decides (device rules too when the device is not `auto`)."""
    for rule in STATIC_RULES:
        rule(config)
    if config["device"] != "auto":
        check_device(config, config["device"])
    if config["max_steps"] is not None:  # the run's length is known without the world size
        check_schedule(config, int(config["max_steps"]))


def check_schedule(config: Config, steps: int) -> None:
    """The LR schedule fits a run of `steps` steps (warmup before the first lr step, steps left for poly)."""
    _warmup_before_lr_steps(config)
    warmup = int(config["warmup_steps"])
    if config["lr_schedule"] == "poly" and warmup >= steps:
        raise ConfigError(f"warmup_steps: {warmup} leaves no steps for poly decay (run has {steps})")


def check_run(config: Config, world_size: int, device: str) -> None:
    """Rules that need the world size and the resolved device; ConfigError naming the keys."""
    check_device(config, device)
    check_schedule(config, total_steps(config, world_size))


def check_gpus(processes_per_node: int, gpus: int) -> None:
    """A CUDA run starts one process per GPU: refuse more processes than the node shows GPUs."""
    if processes_per_node > gpus:
        raise ConfigError(f"nproc_per_node: {processes_per_node} CUDA processes on this node need as many GPUs, "
                          f"it shows {gpus} (CUDA_VISIBLE_DEVICES)")


def check_train_data(config: Config, world_size: int, read_dir: str | os.PathLike | None = None) -> None:
    """The run's files: OFRecord parts shared evenly by the ranks, validation benchmarks present.

    `read_dir` is the folder OneFlow reads when it is not train_data itself: the view that the record check
    (faceflow.data.train_parts) makes without records and parts OneFlow cannot read.
    """
    from faceflow.data.ofrecord import part_files

    data = config["train_data"]
    parts = len(part_files(read_dir or data))
    if parts % world_size:
        raise ConfigError(f"train_data: {data}: {parts} OFRecord parts cannot be split evenly over {world_size} "
                          f"processes (nproc_per_node x nodes; reconvert with `faceflow convert rec ... --parts` "
                          f"a multiple of {world_size})")
    if config["validate_every"] > 0:
        for name, path in config["val_benchmarks"].items():
            if not os.path.exists(path):
                raise ConfigError(f"val_benchmarks.{name}: {path}: no such .bin file or OFRecord directory")
