"""`faceflow ijb MODEL IJB_DIR --target IJBC|IJBB [--out FILE.json]`: IJB 1:1 TAR@FAR (and 1:N) of a model.

MODEL is a checkpoint directory (…/checkpoints/step_NNNNNN) or an exported `.onnx` file; IJB_DIR holds
loose_crop/ and meta/ (or IJBC/ and IJBB/ folders that do).
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from faceflow.errors import FaceflowError
from faceflow.eval.ijb import evaluate_ijb, summary_lines, write_result
from faceflow.eval.ijb_features import Embed
from faceflow.eval.ijb_names import TARGETS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceflow ijb", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", metavar="MODEL", help="checkpoint directory or .onnx file")
    parser.add_argument("ijb_dir", metavar="IJB_DIR", help="folder with loose_crop/ and meta/ (or with IJBC/, IJBB/)")
    parser.add_argument("--target", required=True, choices=tuple(TARGETS), help="benchmark")
    parser.add_argument("--out", type=Path, help="JSON result file (written atomically)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="crops per forward pass, flips run separately (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads decoding and aligning crops (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


@contextlib.contextmanager
def _open_model(model: Path, batch_size: int) -> Iterator[tuple[Embed, dict[str, Any]]]:
    """Temporary until `faceflow.eval.engine.open_embedder` is in main: an ONNX file in onnxruntime (CPU), a
    checkpoint in OneFlow on CPU; yields the embedding function and a description of the model."""
    if model.suffix.lower() == ".onnx":
        if not model.is_file():
            raise FaceflowError(f"{model}: no such ONNX file")
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's errors are not a stable type
            raise FaceflowError(f"{model}: onnxruntime cannot load the model: {err}".splitlines()[0]) from None
        name = session.get_inputs()[0].name

        def run_onnx(batch: np.ndarray) -> np.ndarray:
            return np.concatenate([session.run(None, {name: batch[i:i + batch_size]})[0]
                                   for i in range(0, len(batch), batch_size)])

        yield run_onnx, {"path": str(model), "format": "onnx"}
        return
    from faceflow.checkpoint import load_backbone, read_checkpoint_meta
    from faceflow.runtime.flow import flow

    read_checkpoint_meta(model)
    network, config, step = load_backbone(model, device="cpu")
    network.eval()

    def run_checkpoint(batch: np.ndarray) -> np.ndarray:
        with flow.no_grad():
            return np.concatenate([network(flow.tensor(batch[i:i + batch_size])).numpy()
                                   for i in range(0, len(batch), batch_size)])

    yield run_checkpoint, {"path": str(model), "format": "checkpoint", "network": config.get("network"), "step": step}


def main(argv: list[str]) -> int:
    """Evaluate, print the TAR@FAR lines, write the JSON."""
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise FaceflowError(f"--batch-size: must be positive, got {args.batch_size}")
    if args.threads < 1:
        raise FaceflowError(f"--threads: must be positive, got {args.threads}")
    with _open_model(Path(args.model), args.batch_size) as (embed, model):
        result = evaluate_ijb(args.ijb_dir, args.target, embed, args.batch_size, args.threads,
                              progress=not args.quiet, model=model)
    for line in summary_lines(result):
        print(line)
    if args.out is not None:
        write_result(result, args.out)
    return 0
