"""Pick the checkpoint to export: the last one, or the best on a benchmark (`best:lfw`).

`python -m faceflow.workflow.selection RULE CHECKPOINTS_DIR VALIDATION_DIR` prints the chosen
checkpoint directory; the export rule calls it because `best:` is only known after validation.
"""
from __future__ import annotations

import argparse
import json
import sys
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


def main(argv: list[str] | None = None) -> int:
    """Print the selected checkpoint directory."""
    parser = argparse.ArgumentParser(prog="python -m faceflow.workflow.selection", description=__doc__)
    parser.add_argument("rule", help="last | best:<benchmark>")
    parser.add_argument("checkpoints_dir")
    parser.add_argument("validation_dir")
    args = parser.parse_args(argv)
    try:
        print(select_checkpoint(args.rule, args.checkpoints_dir, args.validation_dir))
    except FaceflowError as err:
        print(f"faceflow selection: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
