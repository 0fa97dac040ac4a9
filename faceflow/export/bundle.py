"""The export bundle the workflow publishes: model.onnx, mxnet/model-{symbol.json,0000.params}, export.json.

Everything is written into a temporary directory next to EXPORT_DIR and renamed into place at the end,
and a format is only written when its parity check against OneFlow passes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from faceflow.checkpoint import load_backbone
from faceflow.data.atomic import atomic_dir
from faceflow.errors import FaceflowError
from faceflow.export.mxnet_export import EPOCH, export_mxnet
from faceflow.export.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, export_onnx
from faceflow.export.parity import MIN_COSINE, drawn_faces

FORMATS = ("onnx", "mxnet")
ONNX_FILE = "model.onnx"
MXNET_PREFIX = "mxnet/model"


def parse_formats(text: str) -> list[str]:
    """`onnx,mxnet` -> ['onnx', 'mxnet'] (validated, order kept, duplicates dropped)."""
    formats = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise FaceflowError(f"--formats: expected a comma-separated subset of {','.join(FORMATS)}, got {text!r}")
    return formats


def export_bundle(checkpoint: str | os.PathLike, export_dir: str | os.PathLike,
                  formats: Sequence[str] = FORMATS, images: np.ndarray | None = None,
                  opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export a checkpoint in every requested format into EXPORT_DIR atomically; return the export.json record."""
    model, config, step = load_backbone(checkpoint)
    images = drawn_faces(8) if images is None else images
    record: dict[str, Any] = {
        "checkpoint": str(checkpoint), "step": step, "network": config["network"],
        "embedding_size": int(config["embedding_size"]), "parity_images": int(len(images)),
        "min_cosine_required": MIN_COSINE, "formats": {},
    }
    with atomic_dir(export_dir) as tmp:
        if "onnx" in formats:
            parity = export_onnx(model, tmp / ONNX_FILE, images, opset)
            record["formats"]["onnx"] = {
                "path": ONNX_FILE, "opset": opset, "input": INPUT_NAME, "output": OUTPUT_NAME,
                "input_normalisation": "(x - 127.5) / 127.5, RGB, NCHW, dynamic batch (not inside the graph)",
                **parity.as_dict()}
        if "mxnet" in formats:
            parity = export_mxnet(model, tmp / MXNET_PREFIX, images)
            record["formats"]["mxnet"] = {
                "path": f"{MXNET_PREFIX}-symbol.json", "params": f"{MXNET_PREFIX}-{EPOCH:04d}.params",
                "epoch": EPOCH, "output": "fc1_output",
                "input_normalisation": "raw 0..255 RGB; (x - 127.5) / 127.5 inside the symbol",
                **parity.as_dict()}
        (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def bundle_paths(export_dir: str | os.PathLike) -> list[Path]:
    """The files a complete bundle with both formats holds."""
    root = Path(export_dir)
    return [root / ONNX_FILE, root / f"{MXNET_PREFIX}-symbol.json", root / f"{MXNET_PREFIX}-{EPOCH:04d}.params",
            root / "export.json"]
