"""The 1:1 map between a faceflow backbone's state-dict keys and InsightFace MXNet parameter names.

A module path becomes the MXNet layer name with '.' -> '_' (`stage2_unit1.conv1sc` ->
`stage2_unit1_conv1sc`); the tensor suffix follows MXNet: conv/FC `weight`/`bias`, BatchNorm
`gamma`/`beta` (args) and `moving_mean`/`moving_var` (aux states), PReLU `gamma`.
"""
from __future__ import annotations

from dataclasses import dataclass

from faceflow.runtime.flow import nn

_BN_SUFFIX = {"weight": ("arg", "gamma"), "bias": ("arg", "beta"),
              "running_mean": ("aux", "moving_mean"), "running_var": ("aux", "moving_var")}
_PLAIN_SUFFIX = {"weight": ("arg", "weight"), "bias": ("arg", "bias")}
_PRELU_SUFFIX = {"weight": ("arg", "gamma")}
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class MxParam:
    """Where a faceflow tensor lives in an MXNet checkpoint: `kind` is 'arg' or 'aux'."""

    kind: str
    name: str
    layer: str

    @property
    def key(self) -> str:
        """The key in the `-NNNN.params` file (`arg:NAME` / `aux:NAME`)."""
        return f"{self.kind}:{self.name}"


def layer_name(module_path: str) -> str:
    """MXNet layer name of a faceflow module path."""
    return module_path.replace(".", "_")


def mxnet_param_map(model: nn.Module) -> dict[str, MxParam]:
    """faceflow state-dict key -> MXNet parameter, for every tensor MXNet stores (not num_batches_tracked)."""
    mapping: dict[str, MxParam] = {}
    for path, module in model.named_modules():
        if isinstance(module, BATCHNORM_TYPES):
            suffixes = _BN_SUFFIX
        elif isinstance(module, nn.PReLU):
            suffixes = _PRELU_SUFFIX
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            suffixes = _PLAIN_SUFFIX
        else:
            continue
        layer = layer_name(path)
        for tensor_name, (kind, suffix) in suffixes.items():
            if getattr(module, tensor_name, None) is not None:
                mapping[f"{path}.{tensor_name}"] = MxParam(kind, f"{layer}_{suffix}", layer)
    return mapping


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """MXNet layer name -> BatchNorm module, for every BatchNorm of the backbone."""
    return {layer_name(path): m for path, m in model.named_modules() if isinstance(m, BATCHNORM_TYPES)}
