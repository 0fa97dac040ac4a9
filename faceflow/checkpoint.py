"""Checkpoint layout shared by training, validation and export.

    OUT/checkpoints/step_{N:06d}/
        backbone/      flow.save of the backbone state_dict (local tensors, written by rank 0)
        head/          flow.save of the FC head state_dict (class weights gathered to rank 0)
        optimizer/     flow.save of the optimizer state_dict (resume only)
        state.json     {"step", "epoch", "world_size", "loss", "time", "graph", "total_steps"}, and
                       "loss_scale" {"scale", "good_steps"} of an eager fp16 run
        config.yaml    the resolved training config (network, embedding_size, ... )

    OUT/train.json  the completion manifest of a finished run: {"run", "steps", "checkpoints": [...]}

A checkpoint is written to a hidden temporary directory and renamed into place, so a directory named
`step_*` is always complete; train.json is written (atomically) only once the last step is saved, so
the workflow declares it, not the checkpoints, as the train job's output and an interrupted run resumes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from faceflow.data.atomic import atomic_dir, atomic_file, is_leftover_temporary
from faceflow.errors import FaceflowError

_STEP_DIR = re.compile(r"^step_(\d{6,})$")
MANIFEST = "train.json"


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


def remove_partial_checkpoints(checkpoints_dir: str | os.PathLike) -> list[Path]:
    """Delete the hidden temporary directories of checkpoints whose writer was killed (SIGTERM/SIGKILL
    skip the cleanup of `atomic_dir`); they are never resumed from, only take disk space."""
    root = Path(checkpoints_dir)
    if not root.is_dir():
        return []
    partial = [child for child in root.iterdir() if child.is_dir() and is_leftover_temporary(child, "step_")]
    for child in partial:
        shutil.rmtree(child, ignore_errors=True)
    return partial


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
    return write_checkpoint_dir(final, step, config, state, write_payload)


def write_checkpoint_dir(path: str | os.PathLike, step: int, config: dict[str, Any], state: dict[str, Any],
                         write_payload: Callable[[Path], None]) -> Path:
    """Write one checkpoint as the directory `path` (replacing it), atomically; single-process writers only."""
    with atomic_dir(path) as tmp:
        write_payload(tmp)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    return Path(path)


def read_checkpoint_meta(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, state) of a checkpoint directory; a clear error when it is not one."""
    path = Path(path)
    config_file, state_file = path / "config.yaml", path / "state.json"
    if not state_file.is_file() or not config_file.is_file():
        raise FaceflowError(f"{path}: not a faceflow checkpoint (missing state.json or config.yaml)")
    return yaml.safe_load(config_file.read_text()), json.loads(state_file.read_text())


def write_manifest(out_dir: str | os.PathLike, steps: int) -> Path:
    """Write OUT/train.json for a run finished at `steps`: run name, steps and its checkpoint directories
    (relative to OUT, oldest first)."""
    out_dir = Path(out_dir)
    found = list_checkpoints(out_dir / "checkpoints")
    if not found or found[-1][0] < steps:
        raise FaceflowError(f"{out_dir / 'checkpoints'}: no checkpoint of step {steps}; the run is not finished")
    manifest = {"run": out_dir.resolve().name, "steps": steps,
                "checkpoints": [str(path.relative_to(out_dir)) for _, path in found]}
    with atomic_file(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return out_dir / MANIFEST


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The completion manifest OUT/train.json; a clear error when it is missing or malformed."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FaceflowError(f"{path}: unreadable training manifest ({err})") from None
    for key in ("run", "steps", "checkpoints"):
        if not isinstance(manifest, dict) or key not in manifest:
            raise FaceflowError(f"{path}: training manifest without {key!r}")
    return manifest


def load_backbone(path: str | os.PathLike, device: str = "cpu"):
    """Rebuild the backbone named in a checkpoint's config and load its weights (eval mode).

    Returns (module, config, step).
    """
    from faceflow.runtime.flow import flow

    from faceflow.models import build_backbone

    config, state = read_checkpoint_meta(path)
    model = build_backbone(config["network"], embedding_size=int(config["embedding_size"]),
                           **(config.get("network_kwargs") or {}))
    model.load_state_dict(flow.load(str(Path(path) / "backbone")))
    model.eval()
    return model.to(device), config, int(state["step"])
