"""Loss registry and FC modes: each head module registers its losses with `register_loss("name", ...)`.

A loss declares its margin parameters with their defaults (`margins={...}`, or None for a plain
softmax), strict lower bounds (`greater_than={...}`: a number, or the name of another margin that must be
smaller) and inclusive upper bounds (`at_most={...}`), all literals, so config checks (`margin_values`) read
them from the source without importing the head modules (`faceflow.registry`). A loss whose forward is not the
combined margin `s * (cos(m1*theta + m2) - m3)` of `heads/fc.py` passes `head=factory`, called as
`factory(config, placement, margins) -> nn.Module`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from faceflow.errors import ConfigError
from faceflow.registry import Registry

# How the class weight is laid out over the ranks (heads/fc.py, heads/partial_fc.py).
FC_MODES = ("data_parallel", "model_parallel", "partial_fc")

HeadFactory = Callable[[Mapping[str, Any], Any, Optional[dict]], Any]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: margin defaults (None: no margins), strict lower and inclusive upper bounds, and
    its head factory."""

    name: str
    margins: Optional[dict[str, float]]
    greater_than: dict[str, float | str] = field(default_factory=dict)
    at_most: dict[str, float] = field(default_factory=dict)
    head: Optional[HeadFactory] = None


LOSSES: Registry[LossSpec] = Registry("faceflow.heads", Path(__file__).parent, "register_loss",
                                      config_key="loss", what="loss")


def register_loss(name: str, margins: Optional[dict[str, float]],
                  greater_than: Optional[dict[str, float | str]] = None, at_most: Optional[dict[str, float]] = None,
                  head: Optional[HeadFactory] = None) -> None:
    """Register loss `name` (a literal) with its margin defaults and bounds (literals too)."""
    LOSSES.add(name, LossSpec(name, margins, dict(greater_than or {}), dict(at_most or {}), head))


def list_losses() -> list[str]:
    """Names of all losses, sorted (read from the head modules, nothing imported)."""
    return LOSSES.names()


def margin_names() -> list[str]:
    """Every margin parameter some loss takes (what a `margins:` mapping may contain)."""
    return sorted({key for d in LOSSES.declared().values() for key in (d.options.get("margins") or {})})


def margin_values(loss: str, overrides: Optional[Mapping[str, Any]]) -> Optional[dict[str, float]]:
    """The loss's margins with the config's `margins:` overrides applied (None for no margins).

    The one check of `margins`: every key is one the loss takes, every value a finite number within the
    loss's declared bounds. ConfigError naming `margins` or `margins.KEY` otherwise.
    """
    options = LOSSES.declaration(loss).options
    defaults, bounds = options.get("margins"), options.get("greater_than") or {}
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ConfigError(f"margins: expected null or a mapping of margin values, got {overrides!r}")
    if defaults is None:
        if overrides:
            raise ConfigError(f"margins: loss {loss} takes no margins (set margins: null)")
        return None
    values = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise ConfigError(f"margins.{key}: loss {loss} takes {', '.join(defaults)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"margins.{key}: expected a finite number, got {value!r}")
        values[key] = float(value)
    for key, bound in bounds.items():
        low = values[bound] if isinstance(bound, str) else bound
        named = f"{bound} ({low:g})" if isinstance(bound, str) else f"{bound:g}"
        if not values[key] > low:
            raise ConfigError(f"margins.{key}: loss {loss} needs {key} > {named}, got {values[key]:g}")
    for key, high in (options.get("at_most") or {}).items():
        if not values[key] <= high:
            raise ConfigError(f"margins.{key}: loss {loss} needs {key} <= {high:g}, got {values[key]:g}")
    return values
