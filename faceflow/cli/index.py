"""`faceflow index DATA_DIR`: rebuild `train.idx` by scanning `train.rec` when it is missing or stale."""
from __future__ import annotations

import argparse
import os

from faceflow.data.recordio import IDX_NAME, refresh_index


def main(argv: list[str]) -> int:
    """Check `DATA_DIR/train.idx` against `train.rec` and rewrite it when it does not match."""
    parser = argparse.ArgumentParser(prog="faceflow index", description=__doc__)
    parser.add_argument("data_dir", metavar="DATA_DIR", help="directory holding train.rec (and train.idx)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the index looks current")
    args = parser.parse_args(argv)
    problem, records = refresh_index(args.data_dir, force=args.force)
    path = os.path.join(args.data_dir, IDX_NAME)
    if problem is None:
        print(f"{path} is current: {records} records")
    else:
        reason = "" if args.force else f" (was: {problem})"
        print(f"wrote {path}: {records} records{reason}")
    return 0
