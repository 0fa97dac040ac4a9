"""`faceflow download URL OUT_DIR [--sha256 H] [--cache-dir DIR]`: fetch, verify and unpack a dataset."""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Entry point: download (resumable), check sha256, unpack into OUT_DIR atomically."""
    parser = argparse.ArgumentParser(prog="faceflow download", description=__doc__.splitlines()[0])
    parser.add_argument("url", help="http://, https:// or file:// URL of an archive (zip, tar, tar.gz) or file")
    parser.add_argument("out_dir", type=Path, help="dataset directory to create (InsightFace layout)")
    parser.add_argument("--sha256", help="expected sha256 of the downloaded file")
    parser.add_argument("--cache-dir", type=Path,
                        help="where partial and finished downloads are kept (default: OUT_DIR/../.downloads)")
    parser.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    args = parser.parse_args(argv)
    from faceflow.data.download import download_dataset

    began = time.perf_counter()
    out = download_dataset(args.url, args.out_dir, args.sha256, args.cache_dir, args.timeout)
    files = [p for p in out.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    print(f"{out}: {len(files)} files, {size} bytes, {time.perf_counter() - began:.1f} s")
    return 0
