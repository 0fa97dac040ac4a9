"""`faceflow download URL OUT_DIR [--sha256 H] [--cache-dir DIR]`: fetch, verify and unpack a dataset."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from faceflow.data.archive import DEFAULT_MAX_MEMBERS, MIN_BYTES_CAP, RATIO_CAP, Limits


def main(argv: list[str]) -> int:
    """Entry point: download (resumable), check sha256, unpack into OUT_DIR atomically."""
    parser = argparse.ArgumentParser(prog="faceflow download", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://, https:// or file:// URL of an archive (zip, tar, tar.gz) or file")
    parser.add_argument("out_dir", type=Path, help="dataset directory to create (InsightFace layout)")
    parser.add_argument("--sha256", help="expected sha256 of the downloaded file")
    parser.add_argument("--cache-dir", type=Path,
                        help="where partial and finished downloads are kept (default: OUT_DIR/../.downloads/OUT_NAME)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    parser.add_argument("--max-unpacked-bytes", type=int, metavar="N",
                        help=f"refuse archives unpacking to more than N bytes (default: {RATIO_CAP} times the "
                             f"archive's size, at least {MIN_BYTES_CAP >> 30} GiB)")
    parser.add_argument("--max-members", type=int, default=DEFAULT_MAX_MEMBERS, metavar="N",
                        help="refuse archives of more than N files, folders and links (default: %(default)s)")
    args = parser.parse_args(argv)
    from faceflow.data.download import download_dataset

    began = time.perf_counter()
    fetched = download_dataset(args.url, args.out_dir, args.sha256, args.cache_dir, args.timeout,
                               Limits(args.max_unpacked_bytes, args.max_members))
    if not fetched.verified:
        print(f"faceflow download: warning: {args.url} announced no length and no --sha256 was given: a download "
              f"cut short cannot be told from a complete one (it was not kept in the cache)", file=sys.stderr)
    files = [p for p in args.out_dir.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"{args.out_dir}: {len(files)} files, {size} bytes, {time.perf_counter() - began:.1f} s")
    return 0
