"""`faceflow index DATA_DIR`: rebuild `train.idx` by scanning `train.rec` when it is missing or stale."""
from __future__ import annotations

import argparse
import os

from faceflow.data.recordio import IDX_NAME, index_problem, rebuild_index


def main(argv: list[str]) -> int:
    """Check `DATA_DIR/train.idx` against `train.rec` and rewrite it when it does not match."""
    parser = argparse.ArgumentParser(prog="faceflow index", description=__doc__)
    parser.add_argument("data_dir", metavar="DATA_DIR", help="directory holding train.rec (and train.idx)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the index looks current")
    args = parser.parse_args(argv)
    problem = None if args.force else index_problem_or_none(args.data_dir)
    rewritten, records = rebuild_index(args.data_dir, force=args.force)
    path = os.path.join(args.data_dir, IDX_NAME)
    if rewritten:
        reason = f" (was: {problem})" if problem else ""
        print(f"wrote {path}: {records} records{reason}")
    else:
        print(f"{path} is current: {records} records")
    return 0


def index_problem_or_none(data_dir: str) -> str | None:
    """The index problem, or None when train.rec itself is missing (rebuild_index reports that)."""
    if not os.path.exists(os.path.join(data_dir, "train.rec")):
        return None
    return index_problem(data_dir)
