"""`faceflow convert rec|bin`: RecordIO datasets and verification `.bin` files to OFRecord parts."""
from __future__ import annotations

import argparse

from faceflow.data.convert import convert_bin, convert_rec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceflow convert", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True, metavar="rec|bin")
    rec = sub.add_parser("rec", help="DATA_DIR with train.rec/train.idx/property -> OUT_DIR/part-NNNNN")
    rec.add_argument("data_dir", metavar="DATA_DIR")
    rec.add_argument("out_dir", metavar="OUT_DIR")
    rec.add_argument("--parts", type=int, default=1, help="number of part files (a multiple of the ranks)")
    rec.add_argument("--shuffle", action="store_true", help="shuffle the record order (seeded)")
    rec.add_argument("--seed", type=int, default=0, help="shuffle seed")
    rec.add_argument("--skip-bad", action="store_true", help="skip and count undecodable images instead of failing")
    rec.add_argument("--no-verify", action="store_true",
                     help="check only the framing and JPEG markers, do not decode every image (faster; a corrupt "
                          "image is then found by faceflow train's own check)")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    bin_ = sub.add_parser("bin", help="verification BIN_FILE -> OUT_DIR/part-00000 (encoded + issame)")
    bin_.add_argument("bin_file", metavar="BIN_FILE")
    bin_.add_argument("out_dir", metavar="OUT_DIR")
    bin_.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Run the conversion and print its summary line (records, classes, bytes, seconds, MB/s)."""
    args = _parser().parse_args(argv)
    if args.kind == "rec":
        summary = convert_rec(args.data_dir, args.out_dir, args.parts, shuffle=args.shuffle, seed=args.seed,
                              skip_bad=args.skip_bad, verify=not args.no_verify, progress=not args.quiet)
    else:
        summary = convert_bin(args.bin_file, args.out_dir, progress=not args.quiet)
    print(summary.line())
    return 0
