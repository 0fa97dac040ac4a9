"""`faceflow report RESULTS_DIR --out REPORT_DIR [--runs a,b] [--tensorboard]`: CSV, Markdown and HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str]) -> int:
    """Entry point: read RESULTS_DIR/runs/*/{validation,metrics.jsonl,config.yaml,export,ijb}, write the report."""
    parser = argparse.ArgumentParser(prog="faceflow report", description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="directory holding runs/{run}/ (the workflow's results/)")
    parser.add_argument("--out", type=Path, required=True, help="report directory (results/report)")
    parser.add_argument("--runs", help="comma-separated run names (default: every run directory)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write each run's per-checkpoint validation as TensorBoard events in "
                        "RESULTS_DIR/runs/{run}/tensorboard/checkpoints (not for runs with tensorboard: false)")
    args = parser.parse_args(argv)
    from faceflow.report.build import write_report

    runs = [name for name in args.runs.split(",") if name] if args.runs else None
    paths = write_report(args.results_dir, args.out, runs, tensorboard=args.tensorboard)
    for path in paths.values():
        print(f"wrote {path}")
    return 0
