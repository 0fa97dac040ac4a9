"""The engine options `faceflow validate` and `faceflow ijb` share, and the GPU lease a CUDA engine needs."""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

from faceflow.eval.engine import ENGINES
from faceflow.runtime.gpus import claim_gpus


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --engine and --onnx-cache (see faceflow.eval.engine.open_embedder)."""
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto (default: CUDA when there is a GPU)")
    parser.add_argument("--engine", default="auto", choices=ENGINES,
                        help="auto (default): OneFlow on CUDA, onnxruntime on CPU (OneFlow if the export fails)")
    parser.add_argument("--onnx-cache", type=Path, metavar="FILE.onnx",
                        help="where the CPU engine exports a checkpoint once (default CHECKPOINT/validation.onnx)")


@contextlib.contextmanager
def gpu_lease(model: Path, device: str, engine: str) -> Iterator[None]:
    """Hold a GPU for the block when the model may run on CUDA; taken before OneFlow loads (it binds the GPUs
    CUDA lets it see then), never for onnxruntime (CPU only)."""
    on_cpu = engine == "onnxruntime" or model.suffix.lower() == ".onnx"
    lease = None if on_cpu else claim_gpus(device, 1)
    try:
        yield
    finally:
        if lease is not None:
            lease.release()
