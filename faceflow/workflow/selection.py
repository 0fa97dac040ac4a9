"""Pick the checkpoint to export: the last one, or the best on a benchmark (`best:lfw`).

`faceflow select-checkpoint RULE CHECKPOINTS_DIR VALIDATION_DIR` prints the chosen checkpoint directory;
the export rule calls it because `best:` is only known after validation.
"""
from __future__ import annotations

import json
from pathlib import Path

from faceflow.checkpoint import list_checkpoints, step_dir_name
from faceflow.errors import FaceflowError


def _accuracy(validation_json: Path, bench: str) -> float:
    """Accuracy of one validation result file (a JSON object, or a list holding the benchmark)."""
    try:
        data = json.loads(validation_json.read_text())
    except (OSError, ValueError) as err:
        raise FaceflowError(f"{validation_json}: unreadable validation result ({err})") from err
    records = data if isinstance(data, list) else [data]
    for record in records:
        if record.get("benchmark") == bench:
            return float(record["accuracy"])
    raise FaceflowError(f"{validation_json}: no result for benchmark {bench!r}")


def select_checkpoint(rule: str, checkpoints_dir: str | Path, validation_dir: str | Path) -> Path:
    """Checkpoint directory chosen by `rule` (`last` or `best:<bench>`; ties go to the later step)."""
    found = list_checkpoints(checkpoints_dir)
    if not found:
        raise FaceflowError(f"{checkpoints_dir}: no complete checkpoint")
    if rule == "last":
        return found[-1][1]
    if not rule.startswith("best:"):
        raise FaceflowError(f"export.checkpoint: expected last or best:<benchmark>, got {rule!r}")
    bench = rule.split(":", 1)[1]
    scored = []
    for step, path in found:
        result = Path(validation_dir) / step_dir_name(step) / f"{bench}.json"
        if not result.is_file():
            raise FaceflowError(f"{result}: missing validation result needed by export.checkpoint {rule}")
        scored.append((_accuracy(result, bench), step, path))
    return max(scored)[2]
