"""Validate the workflow config against its JSON schema, naming the offending key in the error."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from faceflow.errors import ConfigError


def _key_path(path: Iterable[Any]) -> str:
    """`runs.demo.loss` style dotted path (list indices as `[i]`)."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key and what is wrong with it."""
    where = list(error.absolute_path)
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
    if error.validator == "not" and isinstance(error.instance, dict):
        return f"{_key_path(where)}: give steps or epochs, not both"
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


def load_schema(schema_path: str | Path) -> dict[str, Any]:
    """The workflow config schema (YAML)."""
    return yaml.safe_load(Path(schema_path).read_text())


def validate_config(config: dict[str, Any], schema_path: str | Path, source: str = "config") -> dict[str, Any]:
    """Validate `config` and return a copy with defaults filled in; ConfigError naming the key otherwise."""
    schema = load_schema(schema_path)
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (-len(e.absolute_path), str(e.message)))
    if errors:
        error = errors[0]
        if error.context and error.validator in ("oneOf", "anyOf"):
            deeper = [e for e in error.context if e.validator not in ("required",)]
            if deeper:
                error = sorted(deeper, key=lambda e: -len(e.absolute_path))[0]
        raise ConfigError(f"{source}: {_describe(error)}")
    filled = copy.deepcopy(config)
    _fill_defaults(filled, schema, schema)
    return filled
