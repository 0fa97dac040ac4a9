"""`faceflow ijb MODEL IJB_DIR --target IJBC|IJBB [--out FILE.json]`: IJB 1:1 TAR@FAR (and 1:N) of a model.

MODEL is a checkpoint directory (…/checkpoints/step_NNNNNN) or an exported `.onnx` file; IJB_DIR holds
loose_crop/ and meta/ (or IJBC/ and IJBB/ folders that do).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from faceflow.cli.engine_args import add_engine_arguments, gpu_lease
from faceflow.errors import FaceflowError
from faceflow.eval.engine import open_embedder
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
    add_engine_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str]) -> int:
    """Evaluate, print the TAR@FAR lines, write the JSON."""
    args = _parser().parse_args(argv)
    if args.batch_size < 1:
        raise FaceflowError(f"--batch-size: must be positive, got {args.batch_size}")
    if args.threads < 1:
        raise FaceflowError(f"--threads: must be positive, got {args.threads}")
    model = Path(args.model)
    with gpu_lease(model, args.device, args.engine):
        embedder = open_embedder(model, args.device, args.batch_size, onnx_cache=args.onnx_cache, engine=args.engine)
        result = evaluate_ijb(args.ijb_dir, args.target, embedder, args.batch_size, args.threads,
                              progress=not args.quiet, model=embedder.model)
    for line in summary_lines(result):
        print(line)
    if args.out is not None:
        write_result(result, args.out)
    return 0
