"""The model a run's IJB job evaluates: the one export_model published in results/runs/{run}/export/.

`python -m faceflow.workflow.exported EXPORT_DIR` prints EXPORT_DIR/model.onnx when the bundle holds one
(fast on CPU through onnxruntime), else the checkpoint its export.json names (the one export.checkpoint chose).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceflow.errors import FaceflowError


def exported_model(export_dir: str | Path) -> Path:
    """The exported ONNX model of an export bundle, or the checkpoint it was exported from."""
    record_path = Path(export_dir) / "export.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as err:
        raise FaceflowError(f"{record_path}: unreadable export record ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("formats"), dict):
        raise FaceflowError(f"{record_path}: expected an object with 'formats' (faceflow export bundle)")
    onnx = record["formats"].get("onnx")
    if isinstance(onnx, dict) and isinstance(onnx.get("path"), str):
        return Path(export_dir) / onnx["path"]
    if not isinstance(record.get("checkpoint"), str):
        raise FaceflowError(f"{record_path}: names neither an ONNX model nor a 'checkpoint'")
    return Path(record["checkpoint"])


def main(argv: list[str] | None = None) -> int:
    """Print the model file or checkpoint directory."""
    parser = argparse.ArgumentParser(prog="python -m faceflow.workflow.exported", description=__doc__)
    parser.add_argument("export_dir", help="results/runs/RUN/export")
    args = parser.parse_args(argv)
    try:
        print(exported_model(args.export_dir))
    except FaceflowError as err:
        print(f"faceflow exported: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
