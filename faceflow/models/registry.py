"""Backbone registry: each family module registers its factories with `@register_model("name")`.

Names are read from the family files without importing them (`faceflow.registry`), so config checks
list every backbone without loading OneFlow; `build_backbone` imports the family on first use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from faceflow.errors import ConfigError
from faceflow.registry import Declaration, Registry

if TYPE_CHECKING:
    from faceflow.runtime.flow import nn

ModelFactory = Callable[..., "nn.Module"]

MODELS: Registry[ModelFactory] = Registry("faceflow.models", Path(__file__).parent, "register_model",
                                          config_key="network", what="backbone")
# Options every factory receives from the config keys of the same name (not from network_kwargs).
CONFIG_OPTIONS = ("embedding_size", "dropout")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(embedding_size, dropout, **kwargs) -> nn.Module` under the literal `name`."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        MODELS.add(name, factory)
        return factory

    return decorate


def list_models() -> list[str]:
    """Names of all backbones, sorted (read from the family files, nothing imported)."""
    return MODELS.names()


def model_declaration(name: str) -> Declaration:
    """Where `name` is registered and the parameters its factory takes (ConfigError naming `network`)."""
    return MODELS.declaration(name)


def build_backbone(name: str, embedding_size: int = 512, **kwargs: Any) -> "nn.Module":
    """Build the backbone registered as `name` (input N x 3 x 112 x 112, output N x embedding_size)."""
    factory = MODELS.get(name)
    if int(embedding_size) <= 0:
        raise ConfigError(f"embedding_size: must be a positive integer, got {embedding_size!r}")
    try:
        return factory(embedding_size=int(embedding_size), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"network: bad option for backbone {name!r}: {exc}") from exc
