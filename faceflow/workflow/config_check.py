"""Validate the workflow config against its JSON schema, naming the offending key in the error.

The schema is `workflow/schemas/config.schema.yaml` completed at load with what has one source
elsewhere: the run properties (the training-key table, `faceflow.train.keys`, with the registries'
network and loss names), the `models:` entries' network, embedding size and format (the same table,
`faceflow.export.model_files`), the benchmark names (`faceflow.eval.benchmark_names`) and the IJB targets
(`faceflow.eval.ijb_layout`).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from faceflow.errors import ConfigError
from faceflow.eval.benchmark_names import BENCHMARKS, benchmark_pattern
from faceflow.eval.ijb_names import TARGETS as IJB_TARGETS
from faceflow.export.model_files import IMPORT_FORMATS
from faceflow.train.keys import KEY_BY_NAME, RUN_KEYS, check_value, json_property, numbers_from_strings, run_key_properties
from faceflow.workflow.resources import JOB_KEYS, VALIDATION_DEVICES


def _key_path(path: Iterable[Any]) -> str:
    """`runs.demo.loss` style dotted path (list indices as `[i]`)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# training keys a `models:` entry takes (their schema comes from the key table)
MODEL_TRAINING_KEYS = ("network", "embedding_size")


def _run_key_message(config: dict[str, Any], where: list[Any]) -> str | None:
    """For a bad value of a training key in a run or model entry, the training check's own message (one wording)."""
    if len(where) < 3:
        return None
    section, name, run_key = where[:3]
    keys = RUN_KEYS if section == "runs" else {k: k for k in MODEL_TRAINING_KEYS} if section == "models" else {}
    if run_key not in keys:
        return None
    try:
        check_value(KEY_BY_NAME[keys[run_key]], config[section][name][run_key])
    except ConfigError as err:
        return f"{section}.{name}.{run_key}: {str(err).split(': ', 1)[1]}"
    return None


def _describe(error: jsonschema.ValidationError, config: dict[str, Any]) -> str:
    """One line naming the key and what is wrong with it."""
    where = list(error.absolute_path)
    from_table = _run_key_message(config, where)
    if from_table is not None:
        return from_table
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        key = _key_path(where + extra[:1])
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown key{hint}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{_key_path(where + [missing])}: required key is missing"
    if error.validator == "oneOf" and isinstance(error.instance, dict):
        names = [name for choice in error.validator_value for name in choice.get("required", [])]
        return f"{_key_path(where)}: give exactly one of {', '.join(names)}"
    if error.validator == "propertyNames":
        return f"{_key_path(where)}: bad name {error.instance!r} (letters, digits, _ . - only)"
    return f"{_key_path(where)}: {error.message}"


def _fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Set schema `default`s for missing keys, recursing through properties and $refs."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        schema = root["definitions"][name]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra, root)


def complete_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the generated parts to the committed schema (in place): run-key properties, benchmark and IJB names."""
    run = schema["definitions"]["run"]["properties"]
    generated = {**run_key_properties(), **copy.deepcopy(JOB_KEYS)}
    clash = sorted(set(run) & set(generated))
    if clash:
        raise ConfigError(f"definitions.run.properties.{clash[0]}: a generated key; remove it from the schema file")
    run.update(generated)
    model = schema["definitions"]["model"]["properties"]
    for name in MODEL_TRAINING_KEYS:
        model[name] = {**json_property(KEY_BY_NAME[name]), "description": model[name]["description"]}
    model["format"]["enum"] = list(IMPORT_FORMATS)
    schema["definitions"]["benchmark"]["enum"] = list(BENCHMARKS)
    schema["definitions"]["ijb_target"]["enum"] = list(IJB_TARGETS)
    schema["properties"]["validation"]["properties"]["device"]["enum"] = list(VALIDATION_DEVICES)
    schema["definitions"]["dataset"]["properties"]["benchmarks"]["default"] = list(BENCHMARKS)
    schema["properties"]["export"]["properties"]["checkpoint"]["pattern"] = f"^(last|best:({benchmark_pattern()}))$"
    return schema


def load_schema(schema_path: str | Path) -> dict[str, Any]:
    """The workflow config schema: the committed YAML completed by `complete_schema`."""
    return complete_schema(yaml.safe_load(Path(schema_path).read_text()))


def _numbers_from_strings(config: dict[str, Any]) -> dict[str, Any]:
    """A copy in which run values YAML left as strings (`lr: 1e-3`) are the floats they spell, as `faceflow
    train` reads them."""
    config = copy.deepcopy(config)
    runs = config.get("runs")
    for entry in runs.values() if isinstance(runs, dict) else ():
        if not isinstance(entry, dict):
            continue
        for run_key, value in entry.items():
            if run_key in RUN_KEYS:
                entry[run_key] = numbers_from_strings(KEY_BY_NAME[RUN_KEYS[run_key]], value)
    return config


def validate_config(config: dict[str, Any], schema_path: str | Path, source: str = "config") -> dict[str, Any]:
    """Validate `config` and return a copy with defaults filled in; ConfigError naming the key otherwise."""
    config = _numbers_from_strings(config)
    schema = load_schema(schema_path)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (-len(e.absolute_path), str(e.message)))
    if errors:
        error = errors[0]
        if error.context and error.validator in ("oneOf", "anyOf"):
            deeper = [e for e in error.context if e.validator not in ("required",)]
            if deeper:
                error = sorted(deeper, key=lambda e: -len(e.absolute_path))[0]
        raise ConfigError(f"{source}: {_describe(error, config)}")
    filled = copy.deepcopy(config)
    _fill_defaults(filled, schema, schema)
    return filled
