"""`faceflow synth OUT_DIR [--classes N] [--per-class K] [--pairs P] [--seed S] [--ijb-identities I] [--workers W]`:
draw the synthetic dataset."""
from __future__ import annotations

import argparse

from faceflow.data import synth
from faceflow.errors import FaceflowError


def build_parser() -> argparse.ArgumentParser:
    """The command's options (defaults are the demo size)."""
    parser = argparse.ArgumentParser(
        prog="faceflow synth",
        description="Draw procedural faces in InsightFace layout (train.rec/.idx/property) plus "
        "lfw.bin, cfp_fp.bin, agedb_30.bin and IJB-style ijb/IJBC, ijb/IJBB on identities disjoint from training.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output directory (written atomically)")
    parser.add_argument("--classes", type=int, default=synth.DEFAULT_CLASSES, help="training identities (default %(default)s)")
    parser.add_argument("--per-class", type=int, default=synth.DEFAULT_PER_CLASS, help="images per training identity (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=synth.DEFAULT_PAIRS, help="pairs per verification set, even (default %(default)s)")
    parser.add_argument("--seed", type=int, default=synth.DEFAULT_SEED, help="random seed; same seed, same bytes (default %(default)s)")
    parser.add_argument("--ijb-identities", type=int, default=synth.DEFAULT_IDENTITIES,
                        help="identities of each IJB-style benchmark, 0 for none (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="drawing processes (default: every usable CPU); the bytes do not depend on it")
    return parser


def main(argv: list[str]) -> int:
    """Generate the dataset and print a one-line summary."""
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise FaceflowError(f"--workers: need at least 1 process, got {args.workers}")
    summary = synth.generate_dataset(args.out_dir, args.classes, args.per_class, args.pairs, args.seed, args.workers,
                                     args.ijb_identities)
    ijb = "".join(f", {synth.IJB_DIR}/{target} with {count} images" for target, count in summary.ijb_images.items())
    print(
        f"faceflow synth: {summary.out_dir}: {summary.train_images} training images of {summary.num_classes} "
        f"identities, {', '.join(synth.BENCHMARKS)} with {summary.pairs} pairs each{ijb}, {summary.seconds:.1f} s"
    )
    return 0
