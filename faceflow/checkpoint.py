"""Checkpoint layout shared by training, validation and export.

    OUT/checkpoints/step_{N:06d}/
        backbone/      flow.save of the backbone state_dict (local tensors, written by rank 0)
        head/          flow.save of the FC head state_dict (class weights gathered to rank 0)
        optimizer/     flow.save of the optimizer state_dict (resume only)
        state.json     {"step", "epoch", "world_size", "loss", "time"}
        config.yaml    the resolved training config (network, embedding_size, ... )

A checkpoint is written to a hidden temporary directory and renamed into place, so a directory named
`step_*` is always complete.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import yaml

from faceflow.data.atomic import atomic_dir
from faceflow.errors import FaceflowError

_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def step_dir_name(step: int) -> str:
    """Directory name of the checkpoint taken after `step` optimizer steps."""
    return f"step_{step:06d}"


def list_checkpoints(checkpoints_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `checkpoints_dir` as (step, path), oldest first."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(checkpoints_dir)
    return found[-1] if found else None


def write_checkpoint(
    checkpoints_dir: str | os.PathLike,
    step: int,
    config: dict[str, Any],
    state: dict[str, Any],
    write_payload: Callable[[Path], None],
    writer: bool = True,
) -> Path:
    """Write a checkpoint atomically: `write_payload(tmp_dir)` saves tensors, then state/config, then rename.

    In a multi-process run every rank calls this (saving global tensors is collective); only the
    rank with `writer=True` touches the disk, the others run `write_payload` on a placeholder path.
    """
    root = Path(checkpoints_dir)
    final = root / step_dir_name(step)
    if not writer:
        write_payload(root / f".{step_dir_name(step)}.not-written")
        return final
    with atomic_dir(final) as tmp:
        write_payload(tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    return final


def read_checkpoint_meta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, state) of a checkpoint directory; a clear error when it is not one."""
    path = Path(path)
    config_file, state_file = path / "config.yaml", path / "state.json"
    if not state_file.is_file() or not config_file.is_file():
        raise FaceflowError(f"{path}: not a faceflow checkpoint (missing state.json or config.yaml)")
    return yaml.safe_load(config_file.read_text()), json.loads(state_file.read_text())


def load_backbone(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild the backbone named in a checkpoint's config and load its weights (eval mode).

    Returns (module, config, step).
    """
    import oneflow as flow

    from faceflow.models import build_backbone

    config, state = read_checkpoint_meta(path)
    model = build_backbone(config["network"], embedding_size=int(config["embedding_size"]),
                           **(config.get("network_kwargs") or {}))
    model.load_state_dict(flow.load(str(Path(path) / "backbone")))
    model.eval()
    return model.to(device), config, int(state["step"])
