"""The table of training-config keys: name, default, type, bounds or choices, and how the workflow passes it.

The one source of the keys: `faceflow train`'s checks (`faceflow.train.config`), the workflow schema's
`runs.*` properties (`faceflow.workflow.config_check`), the workflow's run-key -> training-key mapping
(`faceflow.workflow.plan`), the keys a resumed run may change (`faceflow.train.resume`) and `faceflow keys`
are all built from `KEYS`. Adding a key is one `Key(...)` line; rules across several keys live in
`faceflow.train.rules`. Names of networks and losses come from their registries, read without OneFlow.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from faceflow.data.record_policy import BAD_IMAGE_POLICIES
from faceflow.errors import ConfigError
from faceflow.heads.registry import FC_MODES, list_losses, margin_names
from faceflow.models.registry import list_models

KINDS = ("int", "number", "bool", "str", "ints", "numbers", "mapping")
_JSON_TYPES = {"int": "integer", "number": "number", "bool": "boolean", "str": "string", "mapping": "object"}
_ITEM_KIND = {"ints": "int", "numbers": "number"}
_BOUNDS = re.compile(r"^(?:(>=|>|<=|<)(-?[\d.]+)|([\[(])(-?[\d.]+),(-?[\d.]+)([\])]))$")


@dataclass(frozen=True)
class Bounds:
    """An interval parsed from `>0`, `>=2`, `<1`, `[0,1)`, `(0,1]` (a bound is None when open-ended)."""

    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        """Whether `value` lies inside."""
        if self.low is not None and not (value >= self.low if self.low_inclusive else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.high_inclusive else value < self.high)

    def text(self) -> str:
        """`> 0`, `>= 2`, `in [0, 1)`."""
        if self.low is not None and self.high is not None:
            return (f"in {'[' if self.low_inclusive else '('}{_num(self.low)}, "
                    f"{_num(self.high)}{']' if self.high_inclusive else ')'}")
        if self.low is not None:
            return f"{'>=' if self.low_inclusive else '>'} {_num(self.low)}"
        if self.high is not None:
            return f"{'<=' if self.high_inclusive else '<'} {_num(self.high)}"
        return "any value"

    def json(self) -> dict[str, float]:
        """The JSON-schema keywords of the interval."""
        out: dict[str, float] = {}
        if self.low is not None:
            out["minimum" if self.low_inclusive else "exclusiveMinimum"] = _plain(self.low)
        if self.high is not None:
            out["maximum" if self.high_inclusive else "exclusiveMaximum"] = _plain(self.high)
        return out


def _plain(value: float) -> float:
    """2.0 -> 2 (for the schema), 0.5 -> 0.5."""
    return int(value) if float(value).is_integer() else value


def _num(value: float) -> str:
    return str(_plain(value))


def parse_bounds(text: str) -> Bounds:
    """The interval a table entry writes as `>0`, `>=0`, `<1`, `[0,1)`, `(0,1]` ('' is unbounded)."""
    if not text:
        return Bounds()
    match = _BOUNDS.match(text.replace(" ", ""))
    if not match:
        raise ValueError(f"bad bounds {text!r}")
    op, value, left, low, high, right = match.groups()
    if op is not None:
        bound = float(value)
        if op.startswith(">"):
            return Bounds(low=bound, low_inclusive=op == ">=")
        return Bounds(high=bound, high_inclusive=op == "<=")
    return Bounds(float(low), left == "[", float(high), right == "]")


@dataclass(frozen=True)
class Key:
    """One training-config key (`bounds` apply to the value, or to each item of an `ints`/`numbers` list)."""

    name: str
    default: Any
    kind: str
    bounds: str = ""
    choices: Sequence[str] | Callable[[], Sequence[str]] = ()
    nullable: bool = False
    run: str | None = None  # the workflow run key passing it through (`runs.NAME.<run>`); None: not a run key
    resume_free: bool = False  # a resumed run may change it (logging, validation, where the same steps run)
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        parse_bounds(self.bounds)

    def allowed(self) -> tuple[str, ...]:
        """The allowed values of a key with choices (read from a registry when the choices are one)."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    @property
    def interval(self) -> Bounds:
        """The parsed `bounds`."""
        return parse_bounds(self.bounds)


def _margins_schema() -> dict[str, Any]:
    return {"additionalProperties": False, "properties": {name: {"type": "number"} for name in margin_names()}}


KEYS: tuple[Key, ...] = (
    Key("network", "mbf", "str", choices=list_models, run="network", doc="backbone (the model registry)"),
    Key("embedding_size", 128, "int", ">0", run="embedding_size", doc="embedding dimension"),
    Key("dropout", 0.0, "number", "[0,1)", run="dropout", doc="dropout before the embedding FC"),
    Key("network_kwargs", {}, "mapping", run="network_kwargs",
        doc="backbone options (parameters of its factory, e.g. mbf blocks, width_mult, trunk_scale)"),
    Key("pretrained", None, "str", nullable=True, run="pretrained",
        doc="fine-tune: backbone weights from a faceflow checkpoint, .pth, ONNX or MXNet prefix (fresh head)"),
    Key("freeze_backbone_steps", 0, "int", ">=0", run="freeze_backbone_steps",
        doc="fine-tune: the first N steps train only the head (eager only)"),
    Key("train_data", None, "str", nullable=True, doc="OFRecord training directory (the workflow sets it)"),
    Key("bad_images", "fail", "str", choices=BAD_IMAGE_POLICIES, run="bad_images", resume_free=True,
        doc="a training record OneFlow cannot decode stops the run (fail) or is left out and counted (skip); "
            "resume-free: a run trains only on records that decode either way"),
    Key("num_classes", None, "int", ">=2", nullable=True, doc="identities; default: the data's meta.json, else its labels"),
    Key("num_images", None, "int", ">0", nullable=True, doc="training images; default: the records the data check counts"),
    Key("loss", "arcface", "str", choices=list_losses, run="loss", doc="loss (the head registry)"),
    Key("margins", None, "mapping", nullable=True, run="margins", doc="overrides of the loss's margins"),
    Key("fc_mode", "data_parallel", "str", choices=FC_MODES, run="fc_mode", doc="class-weight layout over ranks"),
    Key("sample_rate", 1.0, "number", "(0,1]", run="sample_rate", doc="Partial FC: share of classes per step"),
    Key("partial_fc_momentum", "exact", "str", choices=("exact", "reset"), run="partial_fc_momentum",
        doc="Partial FC: optimizer state of a re-sampled class kept per class (exact) or restarted (reset)"),
    Key("partial_fc_fused_sampler", False, "bool", run="partial_fc_fused_sampler",
        doc="Partial FC: OneFlow's fused CUDA class sampler (device cuda only)"),
    Key("batch_size", 64, "int", ">=2", run="batch_size",
        doc="images per process (the fc1 BatchNorm normalises each process's batch)"),
    Key("max_steps", None, "int", ">0", nullable=True, run="steps", doc="training length in steps (or epochs)"),
    Key("epochs", None, "number", ">0", nullable=True, run="epochs", doc="training length in epochs (or steps)"),
    Key("optimizer", "sgd", "str", choices=("sgd", "adamw"), run="optimizer", doc="sgd or adamw"),
    Key("lr", 0.1, "number", ">0", run="lr", doc="learning rate (after warmup, before decay)"),
    Key("momentum", 0.9, "number", "[0,1)", run="momentum", doc="SGD momentum"),
    Key("weight_decay", 5.0e-4, "number", ">=0", run="weight_decay", doc="weight decay (decoupled for adamw)"),
    Key("lr_schedule", "multistep", "str", choices=("multistep", "poly"), run="lr_schedule",
        doc="multistep (scales at lr_steps) or poly (decay to 0 with power)"),
    Key("warmup_steps", 0, "int", ">=0", run="warmup_steps", doc="linear warmup steps"),
    Key("lr_steps", [], "ints", ">0", run="lr_steps", doc="multistep: increasing steps of the lr changes"),
    Key("scales", [], "numbers", "(0,1]", run="scales", doc="multistep: lr multiplier from each lr_steps entry"),
    Key("power", 2.0, "number", ">0", run="power", doc="poly: decay exponent"),
    Key("clip_grad_norm", None, "number", ">0", nullable=True, run="clip_grad_norm", doc="max gradient L2 norm"),
    Key("fp16", False, "bool", run="fp16", doc="mixed precision (AMP, CUDA only)"),
    Key("graph", False, "bool", run="graph", resume_free=True, doc="compile the step as an nn.Graph"),
    Key("device", "cpu", "str", choices=("cpu", "cuda", "auto"), run="device", resume_free=True,
        doc="cpu, cuda, or auto (cuda when available, decided when training starts)"),
    Key("seed", 0, "int", ">=0", run="seed", doc="random seed (weights, data order)"),
    Key("shuffle", True, "bool", doc="shuffle the training records"),
    Key("shuffle_buffer", 1024, "int", ">0", doc="records per process in the reader's shuffle buffer"),
    Key("mirror", True, "bool", doc="random horizontal flips"),
    Key("checkpoint_every", 1000, "int", ">0", run="checkpoint_every", doc="steps between checkpoints"),
    Key("log_every", 10, "int", ">0", run="log_every", resume_free=True, doc="steps between log lines"),
    Key("tensorboard", True, "bool", run="tensorboard", resume_free=True,
        doc="TensorBoard events of the log and validation in OUT/tensorboard (rank 0)"),
    Key("validate_every", 0, "int", ">=0", resume_free=True, doc="steps between validations while training"),
    Key("val_benchmarks", {}, "mapping", resume_free=True, doc="benchmark name -> .bin or OFRecord directory"),
    Key("val_batch_size", 64, "int", ">0", resume_free=True, doc="validation batch size"),
    Key("num_threads", 2, "int", ">0", run="threads", resume_free=True, doc="CPU threads per process"),
    Key("cpu_affinity", True, "bool", resume_free=True, doc="pin each CPU process to its slice of the CPUs"),
    Key("nproc_per_node", 1, "int", ">0", run="gpus", resume_free=True,
        doc="processes per node (one per GPU; CPU processes on cpu)"),
)
KEY_BY_NAME: dict[str, Key] = {key.name: key for key in KEYS}
DEFAULTS: dict[str, Any] = {key.name: key.default for key in KEYS}
# the run key -> the training key it sets
RUN_KEYS: dict[str, str] = {key.run: key.name for key in KEYS if key.run}
# JSON-schema extras of keys whose values have their own structure
_JSON_EXTRA: dict[str, Callable[[], dict[str, Any]]] = {"margins": _margins_schema}


def yaml_float(value: Any) -> Any:
    """PyYAML reads `1e-3` (no dot) as a string; take such strings as the float they spell."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind in _ITEM_KIND:
        return isinstance(value, list) and all(_is_kind(item, _ITEM_KIND[kind]) for item in value)
    return isinstance(value, {"bool": bool, "str": str, "mapping": dict}[kind])


def _kind_text(key: Key) -> str:
    item = {"int": "an integer", "number": "a finite number", "bool": "true or false", "str": "a string",
            "mapping": "a mapping", "ints": "a list of integers", "numbers": "a list of finite numbers"}[key.kind]
    if key.bounds:
        item += f" {key.interval.text()}" if key.kind not in _ITEM_KIND else f", each {key.interval.text()}"
    return f"{item} or null" if key.nullable else item


def numbers_from_strings(key: Key, value: Any) -> Any:
    """A number key's value with strings that spell numbers (YAML's `1e-3`) read as floats."""
    if key.kind not in ("number", "numbers"):
        return value
    return [yaml_float(v) for v in value] if isinstance(value, list) else yaml_float(value)


def check_value(key: Key, value: Any) -> Any:
    """The value checked against the key's type, choices and bounds; ConfigError `NAME: ...` otherwise."""
    value = numbers_from_strings(key, value)
    if value is None and key.nullable:
        return value
    if not _is_kind(value, key.kind):
        raise ConfigError(f"{key.name}: expected {_kind_text(key)}, got {value!r}")
    choices = key.allowed()
    if choices and value not in choices:
        raise ConfigError(f"{key.name}: expected one of {', '.join(choices)}, got {value!r}")
    interval = key.interval
    items = value if key.kind in _ITEM_KIND else [value] if key.bounds else []
    if any(not interval.contains(item) for item in items):
        raise ConfigError(f"{key.name}: expected {_kind_text(key)}, got {value!r}")
    return value


def json_property(key: Key) -> dict[str, Any]:
    """The key as a JSON-schema property (type, enum, bounds, description): the workflow's `runs.*` entry."""
    if key.kind in _ITEM_KIND:
        schema: dict[str, Any] = {"type": "array",
                                  "items": {"type": _JSON_TYPES[_ITEM_KIND[key.kind]], **key.interval.json()}}
    else:
        schema = {"type": _JSON_TYPES[key.kind], **key.interval.json()}
    choices = key.allowed()
    if choices:
        schema["enum"] = list(choices) + ([None] if key.nullable else [])
    if key.nullable:
        schema["type"] = [schema["type"], "null"]
    schema.update(_JSON_EXTRA.get(key.name, dict)())
    schema["description"] = f"{key.doc} (training key {key.name})" if key.run != key.name else key.doc
    return schema


def run_key_properties() -> dict[str, dict[str, Any]]:
    """`runs.NAME.*` JSON-schema properties of every key the workflow passes through, by run-key name."""
    return {key.run: json_property(key) for key in KEYS if key.run}


def resume_free_keys() -> frozenset[str]:
    """Keys a resumed run may change without retraining."""
    return frozenset(key.name for key in KEYS if key.resume_free)


def _allowed_text(key: Key) -> str:
    choices = key.allowed()
    if choices:
        return " \\| ".join(choices)
    if key.bounds:
        return key.interval.text() if key.kind not in _ITEM_KIND else f"each {key.interval.text()}"
    return ""


def keys_markdown() -> str:
    """The key table as Markdown (what `faceflow keys` prints): key, run key, type, default, allowed, meaning."""
    lines = ["| key | run key | type | default | allowed | meaning |", "|---|---|---|---|---|---|"]
    for key in KEYS:
        default = "null" if key.default is None else str(key.default).lower() if isinstance(key.default, bool) \
            else str(key.default)
        kind = f"{key.kind} or null" if key.nullable else key.kind
        lines.append(f"| `{key.name}` | {f'`{key.run}`' if key.run else '-'} | {kind} | {default} | "
                     f"{_allowed_text(key)} | {key.doc} |")
    return "\n".join(lines)
