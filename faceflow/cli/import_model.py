"""`faceflow import mxnet PREFIX EPOCH OUT_CHECKPOINT --network NAME`: an InsightFace MXNet model as a faceflow checkpoint."""
from __future__ import annotations

import argparse

from faceflow.export.parity import MIN_COSINE, bin_faces, drawn_faces


def build_parser() -> argparse.ArgumentParser:
    """The `faceflow import` parser (one source format: mxnet)."""
    parser = argparse.ArgumentParser(prog="faceflow import", description=__doc__)
    sub = parser.add_subparsers(dest="format", required=True)
    mxnet = sub.add_parser("mxnet", help="InsightFace MXNet checkpoint (fresnet IR, fc_type E; MobileFaceNet)",
                           description="Import PREFIX-symbol.json + PREFIX-EPOCH.params; the embeddings are "
                           f"checked against MXNet's (min cosine >= {MIN_COSINE}) before the checkpoint is written.")
    mxnet.add_argument("prefix", metavar="PREFIX")
    mxnet.add_argument("epoch", type=int, metavar="EPOCH")
    mxnet.add_argument("out", metavar="OUT_CHECKPOINT", help="checkpoint directory to write (e.g. …/step_000000)")
    mxnet.add_argument("--network", required=True, help="faceflow backbone: r18 r34 r50 r100 r200 mbf")
    mxnet.add_argument("--embedding-size", type=int, default=None,
                       help="embedding size (default: read from pre_fc1_weight)")
    mxnet.add_argument("--images", metavar="BIN", help="verification .bin for the parity check (default: drawn faces)")
    mxnet.add_argument("--parity-images", type=int, default=4, metavar="N", help="parity batch size (default 4)")
    return parser


def main(argv: list[str]) -> int:
    """Run `faceflow import mxnet ...`."""
    args = build_parser().parse_args(argv)
    from faceflow.errors import FaceflowError
    from faceflow.export.mxnet_import import import_mxnet_checkpoint

    if args.parity_images < 1:
        raise FaceflowError(f"--parity-images: must be >= 1, got {args.parity_images}")
    images = bin_faces(args.images, args.parity_images) if args.images else drawn_faces(args.parity_images)
    parity = import_mxnet_checkpoint(args.prefix, args.epoch, args.network, args.out, images, args.embedding_size)
    print(f"{args.out}: imported {args.prefix}-{args.epoch:04d}.params as {args.network}; "
          f"max_abs_diff {parity.max_abs_diff:.3g}, min_cosine {parity.min_cosine:.10f} on {parity.images} images")
    return 0
