"""Backbone registry (timm-like): families register factories by name, `build_backbone` looks them up."""
from __future__ import annotations

from typing import Any, Callable

from faceflow.runtime.flow import nn

from faceflow.errors import ConfigError

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(embedding_size, **kwargs) -> nn.Module` under `name`."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_models() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_REGISTRY)


def build_backbone(name: str, embedding_size: int = 512, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as `name` (input N x 3 x 112 x 112, output N x embedding_size)."""
    if name not in _REGISTRY:
        raise ConfigError(f"network: unknown backbone {name!r} (known: {', '.join(list_models())})")
    if int(embedding_size) <= 0:
        raise ConfigError(f"embedding_size: must be a positive integer, got {embedding_size!r}")
    try:
        return _REGISTRY[name](embedding_size=int(embedding_size), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"network: bad option for backbone {name!r}: {exc}") from exc
