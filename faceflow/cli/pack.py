"""`faceflow pack IMAGE_FOLDER OUT_DIR`: a folder-per-identity image tree -> InsightFace RecordIO dataset."""
from __future__ import annotations

import argparse

from faceflow.data.pack import pack_folder


def main(argv: list[str]) -> int:
    """Pack the tree and print a summary line."""
    parser = argparse.ArgumentParser(prog="faceflow pack", description=__doc__)
    parser.add_argument("image_folder", metavar="IMAGE_FOLDER", help="ROOT/<identity>/<image files>")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="receives train.rec, train.idx, property, identities.tsv")
    parser.add_argument("--skip-bad", action="store_true", help="skip and count unusable images instead of failing")
    parser.add_argument("--no-verify", action="store_true",
                        help="check JPEGs only for their start/end markers, do not decode them (faster)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = pack_folder(args.image_folder, args.out_dir, progress=not args.quiet, verify=not args.no_verify,
                          skip_bad=args.skip_bad)
    print(f"wrote {args.out_dir}: {summary.line()}")
    return 0
