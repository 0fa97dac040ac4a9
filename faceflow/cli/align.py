"""`faceflow align RAW_FOLDER OUT_FOLDER [--multiple skip|largest] [--min-score S]`: photos -> aligned 112x112 crops."""
from __future__ import annotations

import argparse

from faceflow.align.folder import LOG_NAME, MULTIPLE_FACES, align_folder


def main(argv: list[str]) -> int:
    """Align the tree and print a summary line."""
    parser = argparse.ArgumentParser(
        prog="faceflow align",
        description="Detect the face in every photo of RAW_FOLDER/<identity>/, align it by its 5 landmarks to the "
        f"ArcFace 112x112 template and write OUT_FOLDER/<identity>/<name>.jpg (then `faceflow pack OUT_FOLDER ...`). "
        f"Skipped photos are listed in OUT_FOLDER/{LOG_NAME}.")
    parser.add_argument("raw_folder", metavar="RAW_FOLDER", help="ROOT/<identity>/<photos>")
    parser.add_argument("out_folder", metavar="OUT_FOLDER", help="receives <identity>/<name>.jpg and " + LOG_NAME)
    parser.add_argument("--multiple", choices=MULTIPLE_FACES, default="skip",
                        help="photos with several faces: skip them, or align the largest face (default %(default)s)")
    parser.add_argument("--min-score", type=float, default=0.5,
                        help="detector score a face needs (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = align_folder(args.raw_folder, args.out_folder, args.multiple, args.min_score, progress=not args.quiet)
    print(f"faceflow align: {args.out_folder}: {summary.line()}")
    return 0
