"""May a run directory's checkpoints be resumed with this training config? If not: stop, or set them aside.

Every checkpoint keeps the resolved config it was trained with (config.yaml). A rerun resumes only
when the keys that shape the weights are unchanged; otherwise `faceflow train` stops with one line
naming the keys, or (`--restart-if-changed`, what the workflow passes) moves the old run to
OUT/superseded/<time>/ and trains from step 0.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from faceflow.checkpoint import list_checkpoints, read_checkpoint_meta
from faceflow.errors import FaceflowError
from faceflow.train.config import DEFAULTS, total_steps
from faceflow.train.keys import resume_free_keys

# Keys a resumed run may change (`resume_free` in the key table): logging, validation while training, threads,
# and where or how the same computation runs (the engine itself refuses an eager checkpoint in graph mode).
RESUME_FREE_KEYS = resume_free_keys()
# The run's length may grow (the multistep LR schedule counts absolute steps); see length_difference.
LENGTH_KEYS = ("max_steps", "epochs")
# What `set_aside` moves: the checkpoints and everything derived from them.
RUN_FILES = ("checkpoints", "metrics.jsonl", "validation.jsonl", "validation", "train.log", "config.yaml",
             "train.json", "launch_logs")
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class ConfigConflict:
    """A checkpoint trained with other training settings than the run asking to resume it."""

    checkpoint: Path
    differences: tuple[str, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The differing config keys."""
        return tuple(text.split(":", 1)[0] for text in self.differences)

    def message(self) -> str:
        """One line naming the checkpoint and each differing key with its old and new value."""
        return (f"{self.checkpoint}: trained with different settings ({'; '.join(self.differences)}); "
                "use the old settings to resume it, or pass --restart-if-changed to move the old run "
                f"to {self.checkpoint.parent.parent / SUPERSEDED}/ and train from step 0")


def _show(value: Any) -> str:
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def length_difference(saved: dict[str, Any], state: dict[str, Any], config: dict[str, Any],
                      world: int) -> str | None:
    """Why the run's length rules out resuming `saved` (it ends before the checkpoint, or a poly LR
    schedule, which depends on the length, changed it), or None."""
    key = "epochs" if config.get("epochs") is not None else "max_steps"
    new_total = total_steps(config, world)
    step = int(state["step"])
    if new_total < step:
        return f"{key}: the run now ends at step {new_total}, before this checkpoint (step {step})"
    old_total = int(state.get("total_steps") or total_steps(saved, int(state.get("world_size", world))))
    if config["lr_schedule"] == "poly" and old_total != new_total:
        return f"{key}: {old_total} -> {new_total} steps (the poly LR schedule depends on the run's length)"
    return None


def config_differences(saved: dict[str, Any], state: dict[str, Any], config: dict[str, Any],
                       world: int) -> list[str]:
    """`key: old -> new` for each training-relevant key in which `config` differs from a checkpoint's
    saved config and state (a key an older checkpoint lacks counts as its default; a key no longer in the
    table, such as the removed `image_size`, is ignored)."""
    differences = []
    for key in sorted(set(saved) | set(config)):
        if key in RESUME_FREE_KEYS or key in LENGTH_KEYS or key not in DEFAULTS:
            continue
        old, new = saved.get(key, DEFAULTS.get(key)), config.get(key, DEFAULTS.get(key))
        if old != new:
            differences.append(f"{key}: {_show(old)} -> {_show(new)}")
    length = length_difference(saved, state, config, world)
    return differences + ([length] if length else [])


def find_conflict(checkpoints_dir: str | os.PathLike, config: dict[str, Any], world: int) -> ConfigConflict | None:
    """The newest checkpoint under `checkpoints_dir` trained with other settings than `config`, or None."""
    for _, path in reversed(list_checkpoints(checkpoints_dir)):
        saved, state = read_checkpoint_meta(path)
        differences = config_differences(saved or {}, state, config, world)
        if differences:
            return ConfigConflict(path, tuple(differences))
    return None


def set_aside(out_dir: str | os.PathLike) -> Path:
    """Move the run's checkpoints and files derived from them to OUT/superseded/<UTC time>/ (a rename,
    so nothing is copied and nothing is lost); returns that directory."""
    out_dir = Path(out_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = out_dir / SUPERSEDED / stamp
    number = 1
    while target.exists():
        number += 1
        target = out_dir / SUPERSEDED / f"{stamp}-{number}"
    target.mkdir(parents=True)
    for name in RUN_FILES:
        if (out_dir / name).exists():
            os.replace(out_dir / name, target / name)
    return target


def prepare_out_dir(out_dir: str | os.PathLike, config: dict[str, Any], world: int, restart_if_changed: bool,
                    log: Callable[[str], None]) -> Path | None:
    """Make OUT resumable with `config`: nothing to do, FaceflowError naming the changed keys, or (with
    `restart_if_changed`) the old run set aside; returns where it went, or None."""
    conflict = find_conflict(Path(out_dir) / "checkpoints", config, world)
    if conflict is None:
        return None
    if not restart_if_changed:
        raise FaceflowError(conflict.message())
    target = set_aside(out_dir)
    log(f"training settings changed ({'; '.join(conflict.differences)}): moved the previous run to {target}; "
        "training from step 0")
    return target
