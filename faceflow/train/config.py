"""Training configuration: defaults, YAML loading, `--set key=value` overrides and validation.

Every bad value raises `ConfigError` whose message names the key, so a user sees one line that
says what to fix. Shipped configs (`faceflow/configs/NAME.yaml`) can be named instead of a path.
"""
from __future__ import annotations

import copy
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from faceflow.errors import ConfigError

NETWORKS = ("r18", "r34", "r50", "r100", "r200", "mbf")
LOSSES = ("softmax", "nsoftmax", "sphereface", "arcface", "cosface", "combined")
FC_MODES = ("data_parallel", "model_parallel", "partial_fc")
# Partial FC optimizer state of a re-sampled class: kept in per-class tables (exact, one more class table
# of memory per state tensor) or restarted from zero (reset, no table: about 40% less peak memory at 1M).
PARTIAL_FC_MOMENTUM = ("exact", "reset")
SCHEDULES = ("multistep", "poly")
OPTIMIZERS = ("sgd", "adamw")  # built by faceflow.train.optimizer

DEFAULTS: dict[str, Any] = {
    "network": "mbf",
    "embedding_size": 128,
    "dropout": 0.0,
    "network_kwargs": {},
    "pretrained": None,
    "freeze_backbone_steps": 0,
    "train_data": None,
    "num_classes": None,
    "num_images": None,
    "image_size": 112,
    "loss": "arcface",
    "margins": None,
    "fc_mode": "data_parallel",
    "sample_rate": 1.0,
    "partial_fc_momentum": "exact",
    "partial_fc_fused_sampler": False,
    "batch_size": 64,
    "max_steps": None,
    "epochs": None,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5.0e-4,
    "lr_schedule": "multistep",
    "warmup_steps": 0,
    "lr_steps": [],
    "scales": [],
    "power": 2.0,
    "clip_grad_norm": None,
    "fp16": False,
    "graph": False,
    "device": "cpu",
    "seed": 0,
    "shuffle": True,
    "shuffle_buffer": 1024,
    "mirror": True,
    "checkpoint_every": 1000,
    "log_every": 10,
    "validate_every": 0,
    "val_benchmarks": {},
    "val_batch_size": 64,
    "num_threads": 2,
    "cpu_affinity": True,
    "nproc_per_node": 1,
}

_TYPES: dict[str, tuple[type, ...]] = {
    "network": (str,),
    "embedding_size": (int,),
    "dropout": (float, int),
    "network_kwargs": (dict,),
    "pretrained": (str,),
    "freeze_backbone_steps": (int,),
    "train_data": (str,),
    "num_classes": (int,),
    "num_images": (int,),
    "image_size": (int,),
    "loss": (str,),
    "margins": (dict,),
    "fc_mode": (str,),
    "sample_rate": (float, int),
    "partial_fc_momentum": (str,),
    "partial_fc_fused_sampler": (bool,),
    "batch_size": (int,),
    "max_steps": (int,),
    "epochs": (int, float),
    "optimizer": (str,),
    "lr": (float, int),
    "momentum": (float, int),
    "weight_decay": (float, int),
    "lr_schedule": (str,),
    "warmup_steps": (int,),
    "lr_steps": (list,),
    "scales": (list,),
    "power": (float, int),
    "clip_grad_norm": (float, int),
    "fp16": (bool,),
    "graph": (bool,),
    "device": (str,),
    "seed": (int,),
    "shuffle": (bool,),
    "shuffle_buffer": (int,),
    "mirror": (bool,),
    "checkpoint_every": (int,),
    "log_every": (int,),
    "validate_every": (int,),
    "val_benchmarks": (dict,),
    "val_batch_size": (int,),
    "num_threads": (int,),
    "cpu_affinity": (bool,),
    "nproc_per_node": (int,),
}
_NULLABLE = {"pretrained", "train_data", "num_classes", "num_images", "margins", "max_steps", "epochs", "clip_grad_norm"}


def shipped_config_names() -> list[str]:
    """Names of the configs packaged in faceflow/configs (usable instead of a path)."""
    folder = resources.files("faceflow") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> tuple[dict[str, Any], str]:
    """Read a config given as a path or a shipped name; returns (mapping, display name)."""
    path = Path(source)
    if not path.is_file():
        if source in shipped_config_names():
            text = (resources.files("faceflow") / "configs" / f"{source}.yaml").read_text()
            return _parse_mapping(text, f"faceflow/configs/{source}.yaml"), source
        names = ", ".join(shipped_config_names())
        raise ConfigError(f"{source}: no such config file or shipped config (shipped: {names})")
    return _parse_mapping(path.read_text(), str(path)), str(path)


def _parse_mapping(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping of config keys")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (['a', 'b'], value parsed as a YAML scalar/flow value)."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item}: empty key")
    try:
        value = _yaml_float(yaml.safe_load(raw)) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `config` with each `key=value` (nested keys with dots) set."""
    result = copy.deepcopy(config)
    for item in overrides:
        keys, value = parse_override(item)
        node = result
        for part in keys[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(keys)}: {part} is not a mapping")
            node = child
        node[keys[-1]] = value
    return result


def load_config(source: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file/shipped name <- overrides, validated; dataset counts filled in."""
    data, where = _read_yaml(source)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config key in {where}")
    merged = {**copy.deepcopy(DEFAULTS), **data}
    merged = apply_overrides(merged, overrides or [])
    return validate_config(merged)


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _yaml_float(value: Any) -> Any:
    """PyYAML reads `1e-3` (no dot) as a string; take such strings as the float they spell."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_types(config: dict[str, Any]) -> None:
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        _fail(unknown[0], "unknown config key")
    for key, types in _TYPES.items():
        if float in types:
            config[key] = _yaml_float(config.get(key))
        value = config.get(key)
        if value is None and key in _NULLABLE:
            continue
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            _fail(key, f"expected {' or '.join(t.__name__ for t in types)}, got {value!r}")


def _check_choices(config: dict[str, Any]) -> None:
    for key, choices in (("network", NETWORKS), ("loss", LOSSES), ("fc_mode", FC_MODES),
                         ("partial_fc_momentum", PARTIAL_FC_MOMENTUM), ("optimizer", OPTIMIZERS),
                         ("lr_schedule", SCHEDULES), ("device", ("cpu", "cuda", "auto"))):
        if config[key] not in choices:
            _fail(key, f"expected one of {', '.join(choices)}, got {config[key]!r}")


def _check_numbers(config: dict[str, Any]) -> None:
    positive = ("embedding_size", "image_size", "batch_size", "checkpoint_every", "log_every",
                "val_batch_size", "num_threads", "shuffle_buffer", "nproc_per_node")
    for key in positive:
        if config[key] <= 0:
            _fail(key, f"must be > 0, got {config[key]}")
    for key in ("warmup_steps", "validate_every", "seed", "freeze_backbone_steps"):
        if config[key] < 0:
            _fail(key, f"must be >= 0, got {config[key]}")
    for key in ("lr", "momentum", "weight_decay", "power"):
        if not math.isfinite(config[key]) or config[key] < 0:
            _fail(key, f"must be a finite number >= 0, got {config[key]}")
    if config["batch_size"] < 2:  # fc1 BatchNorm normalises each process's batch: one sample gives a constant
        _fail("batch_size", f"must be >= 2 per process (the fc1 BatchNorm normalises each process's batch), "
                            f"got {config['batch_size']}")
    if not 0.0 <= config["dropout"] < 1.0:
        _fail("dropout", f"must be in [0, 1), got {config['dropout']}")
    if not 0.0 < config["sample_rate"] <= 1.0:
        _fail("sample_rate", f"must be in (0, 1], got {config['sample_rate']}")
    if config["sample_rate"] < 1.0 and config["fc_mode"] != "partial_fc":
        _fail("sample_rate", "< 1.0 needs fc_mode: partial_fc")
    if config["clip_grad_norm"] is not None and config["clip_grad_norm"] <= 0:
        _fail("clip_grad_norm", f"must be > 0 or null, got {config['clip_grad_norm']}")
    for key in ("num_classes", "num_images", "max_steps", "epochs"):
        if config[key] is not None and config[key] <= 0:
            _fail(key, f"must be > 0, got {config[key]}")
    if config["num_classes"] is not None and config["num_classes"] < 2:
        _fail("num_classes", f"must be >= 2, got {config['num_classes']}")


def _check_schedule(config: dict[str, Any]) -> None:
    steps, scales = config["lr_steps"], config["scales"]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in steps):
        _fail("lr_steps", f"expected a list of positive integers, got {steps!r}")
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        _fail("lr_steps", f"must be strictly increasing, got {steps!r}")
    if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s <= 1 for s in scales):
        _fail("scales", f"expected numbers in [0, 1] (multipliers of lr), got {scales!r}")
    if len(scales) != len(steps):
        _fail("scales", f"needs one value per lr_steps entry ({len(steps)}), got {len(scales)}")


def _check_margins(config: dict[str, Any]) -> None:
    margins = config["margins"]
    if margins is None:
        return
    for key, value in margins.items():
        if key not in ("m1", "m2", "m3", "s"):
            _fail(f"margins.{key}", "unknown margin (expected m1, m2, m3, s)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(f"margins.{key}", f"expected a number, got {value!r}")


def _check_benchmarks(config: dict[str, Any]) -> None:
    for name, path in config["val_benchmarks"].items():
        if not isinstance(path, str):
            _fail(f"val_benchmarks.{name}", f"expected a path to a .bin file, got {path!r}")
    if config["validate_every"] > 0 and not config["val_benchmarks"]:
        _fail("val_benchmarks", "validate_every > 0 needs at least one benchmark")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key (types, choices, ranges, consistency); returns the config unchanged."""
    _check_types(config)
    _check_choices(config)
    _check_numbers(config)
    _check_schedule(config)
    _check_margins(config)
    _check_benchmarks(config)
    if config["freeze_backbone_steps"] and config["graph"]:
        _fail("freeze_backbone_steps", "needs graph: false (a compiled graph cannot stop updating the backbone)")
    if (config["max_steps"] is None) == (config["epochs"] is None):
        _fail("max_steps", "set exactly one of max_steps and epochs")
    return config


def dataset_counts(train_data: str) -> tuple[int, int] | None:
    """(num_classes, num_images) recorded by `faceflow convert rec` in the data's meta.json, if any."""
    meta = Path(train_data) / "meta.json"
    if not meta.is_file():
        return None
    try:
        info = json.loads(meta.read_text())
        return int(info["classes"]), int(info["records"])
    except (ValueError, KeyError, TypeError):
        return None


def resolve_dataset(config: dict[str, Any], counts: tuple[int, int] | None = None) -> dict[str, Any]:
    """Fill num_classes/num_images from `counts` (default: the data's meta.json) when unset; returns a copy."""
    result = dict(config)
    if not result["train_data"]:
        _fail("train_data", "not set (use --set train_data=DIR with OFRecord part-NNNNN files)")
    if not os.path.isdir(result["train_data"]):
        _fail("train_data", f"{result['train_data']}: not a directory")
    if counts is None:
        counts = dataset_counts(result["train_data"])
    if counts is not None:
        if result["num_classes"] is None:
            result["num_classes"] = counts[0]
        if result["num_images"] is None:
            result["num_images"] = counts[1]
    if result["num_classes"] is None:
        _fail("num_classes", "not set and could not be read from the training data (no meta.json)")
    if counts is not None and result["num_classes"] < counts[0]:
        _fail("num_classes", f"{result['num_classes']} is less than the {counts[0]} classes in {result['train_data']}")
    return result


def total_steps(config: dict[str, Any], world_size: int) -> int:
    """Number of optimizer steps of the run: max_steps, or epochs over num_images."""
    if config["max_steps"] is not None:
        return int(config["max_steps"])
    if not config["num_images"]:
        _fail("num_images", "needed to turn epochs into steps")
    global_batch = config["batch_size"] * world_size
    return max(1, int(math.ceil(config["epochs"] * config["num_images"] / global_batch)))
