"""`faceflow exported-model EXPORT_DIR`: print the model a run's IJB job evaluates (faceflow.workflow.exported).

EXPORT_DIR/model.onnx when the export bundle holds one, else the checkpoint its export.json names.
"""
from __future__ import annotations

import argparse

from faceflow.workflow.exported import exported_model


def main(argv: list[str]) -> int:
    """Print the model file or checkpoint directory (FaceflowError, reported by faceflow.cli.main, otherwise)."""
    parser = argparse.ArgumentParser(prog="faceflow exported-model", description=__doc__)
    parser.add_argument("export_dir", help="results/runs/RUN/export")
    print(exported_model(parser.parse_args(argv).export_dir))
    return 0
