"""Which model format a path holds (faceflow checkpoint, arcface_torch .pth, ONNX, InsightFace MXNet), read
off the path alone, so config checks and workflow planning can tell without loading any framework."""
from __future__ import annotations

import re
from pathlib import Path

from faceflow.errors import ConfigError

IMPORT_FORMATS = ("torch", "onnx", "mxnet")  # published formats `faceflow import` reads
MODEL_FORMATS = ("faceflow", *IMPORT_FORMATS)
TORCH_SUFFIXES = (".pth", ".pt")
_PARAMS = re.compile(r"^(?P<prefix>.+)-(?P<epoch>\d{4})\.params$")


def mxnet_epoch(path: str) -> tuple[str, int] | None:
    """(prefix, epoch) of an MXNet model given as PREFIX (its newest epoch) or as PREFIX-NNNN.params."""
    match = _PARAMS.match(path)
    if match and Path(path).is_file() and Path(f"{match['prefix']}-symbol.json").is_file():
        return match["prefix"], int(match["epoch"])
    prefix = Path(path)
    if not Path(f"{path}-symbol.json").is_file():
        return None
    epochs = sorted(int(m["epoch"]) for p in prefix.parent.iterdir()
                    if (m := _PARAMS.match(str(prefix.parent / p.name))) and m["prefix"] == str(prefix))
    return (str(path), epochs[-1]) if epochs else None


def model_format(path: str, key: str) -> str:
    """Which of MODEL_FORMATS `path` is; a ConfigError naming config key `key` when it is none of them."""
    where = Path(path)
    if where.is_dir():
        if not (where / "state.json").is_file():
            raise ConfigError(f"{key}: {path} is a directory but not a faceflow checkpoint (no state.json)")
        return "faceflow"
    if where.suffix in TORCH_SUFFIXES and where.is_file():
        return "torch"
    if where.suffix == ".onnx" and where.is_file():
        return "onnx"
    if mxnet_epoch(path) is not None:
        return "mxnet"
    raise ConfigError(f"{key}: {path}: no such checkpoint directory, .pth/.pt, .onnx or MXNet model "
                      f"(PREFIX-symbol.json + PREFIX-NNNN.params)")


def model_inputs(path: str, fmt: str) -> list[str]:
    """The files a model of format `fmt` at `path` is read from (what a workflow job depends on)."""
    if fmt == "mxnet":
        prefix, epoch = mxnet_epoch(path)
        return [f"{prefix}-symbol.json", f"{prefix}-{epoch:04d}.params"]
    if fmt == "faceflow":
        return [str(Path(path) / "state.json")]
    return [path]
