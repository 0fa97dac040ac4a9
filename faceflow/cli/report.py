"""`faceflow report RESULTS_DIR --out REPORT_DIR [--runs a,b]`: accuracy CSV, Markdown and HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    """Entry point: read RESULTS_DIR/runs/*/{validation,metrics.jsonl}, write the report files."""
    parser = argparse.ArgumentParser(prog="faceflow report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="directory holding runs/{run}/ (the workflow's results/)")
    parser.add_argument("--out", type=Path, required=True, help="report directory (results/report)")
    parser.add_argument("--runs", help="comma-separated run names (default: every run directory)")
    args = parser.parse_args(argv)
    from faceflow.report.build import write_report

    runs = [name for name in args.runs.split(",") if name] if args.runs else None
    paths = write_report(args.results_dir, args.out, runs)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
