"""Training configuration: YAML loading, `--set key=value` overrides and validation.

The keys, their defaults and checks are the table in `faceflow.train.keys`; the rules across keys are
`faceflow.train.rules`. Every bad value raises `ConfigError` whose message names the key, so a user sees
one line that says what to fix. Shipped configs (`faceflow/configs/NAME.yaml`) can be named instead of a path.
"""
from __future__ import annotations

import copy
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from faceflow.errors import ConfigError
from faceflow.train.keys import DEFAULTS, KEY_BY_NAME, KEYS, check_value, yaml_float
from faceflow.train.rules import check_config, total_steps

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
        value = yaml_float(yaml.safe_load(raw)) if raw.strip() else None
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


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Check every key against the key table, then the rules across keys; returns the config with missing
    keys set to their defaults (numbers that YAML left as strings, such as `1e-3`, become floats)."""
    unknown = sorted(set(config) - set(KEY_BY_NAME))
    if unknown:
        _fail(unknown[0], "unknown config key")
    for key in KEYS:
        config[key.name] = check_value(key, config.get(key.name, copy.deepcopy(key.default)))
    check_config(config)
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
    """Fill num_classes/num_images from `counts` (default: the data's meta.json) when unset; returns a copy.

    `faceflow train` passes the counts of its check of every training record (faceflow.data.train_parts).
    """
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
        _fail("num_classes", "not set and could not be read from the training data (no meta.json, no labels)")
    if counts is not None and result["num_classes"] < counts[0]:
        _fail("num_classes", f"{result['num_classes']} is less than the {counts[0]} classes in {result['train_data']}")
    return result


__all__ = ["DEFAULTS", "apply_overrides", "dataset_counts", "load_config", "parse_override", "resolve_dataset",
           "shipped_config_names", "total_steps", "validate_config"]
