"""arcface_torch state-dict keys of each faceflow backbone family, and the architecture a key set describes.

One `TorchLayout` per family holds the whole correspondence: `module_path` turns a faceflow module path
into the arcface_torch one (tensor names `weight`, `bias`, `running_mean`, `running_var` are the same on
both sides), `recognise` reads (network, network_kwargs) off a state dict, `embedding_key` is where the
embedding size is read. IResNet: `conv1 bn1 prelu layer{i}.{j}.{bn1,conv1,bn2,prelu,conv2,bn3}
layer{i}.0.downsample.{0,1} bn2 fc features` (backbones/iresnet.py); MobileFaceNet: `layers.{0..7}`
(ConvBlock / DepthWise / Residual `.layers.{k}`), `conv_sep`, `features.layers.{0,2,3}` (GDC), scale 2
(backbones/mobilefacenet.py); ViT: faceflow's module names are arcface_torch's (backbones/vit.py), width and
depth read off `pos_embed` and the `blocks.{i}` keys. A family registered later adds its layout to `LAYOUTS`.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from faceflow.models.iresnet import UNITS as IRESNET_UNITS

_IRESNET_TOP = {"conv0": "conv1", "bn0": "bn1", "relu0": "prelu", "bn1": "bn2", "pre_fc1": "fc", "fc1": "features"}
_IRESNET_UNIT = re.compile(r"^stage(\d+)_unit(\d+)$")
_IRESNET_BLOCK = {"relu1": "prelu", "conv1sc": "downsample.0", "sc": "downsample.1"}
_IRESNET_KEY = re.compile(r"^layer(\d)\.(\d+)\.")
_MBF_TOP = {"conv_1": "layers.0", "conv_2_dw": "layers.1", "res_2": "layers.1", "dconv_23": "layers.2",
            "res_3": "layers.3", "dconv_34": "layers.4", "res_4": "layers.5", "dconv_45": "layers.6",
            "res_5": "layers.7", "conv_6sep": "conv_sep", "conv_6dw7_7": "features.layers.0",
            "pre_fc1": "features.layers.2", "fc1": "features.layers.3"}
_MBF_INNER = {"conv_sep": "layers.0", "conv_dw": "layers.1", "conv_proj": "layers.2",
              "conv2d": "layers.0", "batchnorm": "layers.1", "relu": "layers.2"}
_MBF_BLOCK = re.compile(r"^block(\d+)$")


def _iresnet_path(path: str) -> str:
    top, _, rest = path.partition(".")
    unit = _IRESNET_UNIT.match(top)
    if unit is None:
        return _IRESNET_TOP.get(top, top) + (f".{rest}" if rest else "")
    prefix = f"layer{unit.group(1)}.{int(unit.group(2)) - 1}"
    return prefix + (f".{_IRESNET_BLOCK.get(rest, rest)}" if rest else "")


def _iresnet_recognise(state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, Any]] | None:
    if "conv1.weight" not in state or "fc.weight" not in state:
        return None
    blocks: dict[int, set[int]] = {}
    for key in state:
        match = _IRESNET_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    units = tuple(len(blocks.get(stage, ())) for stage in (1, 2, 3, 4))
    name = next((n for n, u in IRESNET_UNITS.items() if u == units), None)
    return (name, {}) if name else None


def _mbf_path(path: str) -> str:
    top, *rest = path.split(".")
    parts = [_MBF_TOP[top]] if top in _MBF_TOP else [top]
    for part in rest:
        block = _MBF_BLOCK.match(part)
        parts.append(f"layers.{block.group(1)}" if block else _MBF_INNER.get(part, part))
    return ".".join(parts)


def _count(state: Mapping[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.layers\.(\d+)\.layers\.0\.")
    return len({m.group(1) for m in map(pattern.match, state) if m})


def _mbf_recognise(state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, Any]] | None:
    stem = state.get("layers.0.layers.0.weight")
    if stem is None or "features.layers.0.layers.0.weight" not in state or stem.ndim != 4:
        return None
    first = 1 if "layers.1.layers.0.weight" in state else _count(state, "layers.1")
    blocks = [first, _count(state, "layers.3"), _count(state, "layers.5"), _count(state, "layers.7")]
    kwargs: dict[str, Any] = {"trunk_scale": max(1, int(stem.shape[0]) // 64)}
    if blocks != [1, 4, 6, 2]:
        kwargs["blocks"] = blocks
    return "mbf", kwargs


VIT_NAMES = ("vit_t", "vit_s", "vit_b", "vit_l")
_VIT_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _vit_defaults(name: str) -> tuple[int, int]:
    """(width, depth) defaults of the ViT factory `name`."""
    from faceflow.models import vit

    parameters = inspect.signature(getattr(vit, name)).parameters
    return parameters["width"].default, parameters["depth"].default


def _vit_recognise(state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, Any]] | None:
    pos = state.get("pos_embed")
    if pos is None or "patch_embed.proj.weight" not in state or np.ndim(pos) != 3:
        return None
    width = int(pos.shape[2])
    depth = len({m.group(1) for m in map(_VIT_BLOCK.match, state) if m})
    shapes = {name: _vit_defaults(name) for name in VIT_NAMES}
    exact = next((name for name, shape in shapes.items() if shape == (width, depth)), None)
    if exact:
        return exact, {}
    name = next((name for name, shape in shapes.items() if shape[0] == width), "vit_t")
    default_width, default_depth = shapes[name]
    kwargs = {key: value for key, value, default in (("width", width, default_width), ("depth", depth, default_depth))
              if value != default}
    return name, kwargs


@dataclass(frozen=True)
class TorchLayout:
    """How one faceflow family's state-dict keys are named in arcface_torch."""

    module_path: Callable[[str], str]
    recognise: Callable[[Mapping[str, np.ndarray]], "tuple[str, dict[str, Any]] | None"]
    embedding_key: str
    absent: frozenset[str] = frozenset()  # faceflow keys arcface_torch does not have (zeros on import)
    bn_eps: float = 1e-5  # every BatchNorm of arcface_torch's backbones


LAYOUTS: dict[str, TorchLayout] = {
    **{name: TorchLayout(_iresnet_path, _iresnet_recognise, "fc.weight") for name in IRESNET_UNITS},
    "mbf": TorchLayout(_mbf_path, _mbf_recognise, "features.layers.2.weight", frozenset({"pre_fc1.bias"})),
    **{name: TorchLayout(str, _vit_recognise, "feature.2.weight", bn_eps=2e-5) for name in VIT_NAMES},
}


def torch_key(layout: TorchLayout, faceflow_key: str) -> str:
    """The arcface_torch key of a faceflow state-dict key."""
    path, _, tensor = faceflow_key.rpartition(".")
    return f"{layout.module_path(path)}.{tensor}" if path else tensor


def recognise(state: Mapping[str, np.ndarray]) -> tuple[str, dict[str, Any]] | None:
    """(faceflow network, network_kwargs) whose arcface_torch key set `state` has, or None."""
    for layout in {id(v): v for v in LAYOUTS.values()}.values():
        found = layout.recognise(state)
        if found:
            return found
    return None
