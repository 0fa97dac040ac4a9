"""`faceflow report RESULTS_DIR --out REPORT_DIR [--runs a,b] [--benchmarks lfw,..] [--ijb-targets IJBC,..]
[--tensorboard]`: CSV, Markdown and HTML report."""
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
    parser.add_argument("--benchmarks", help="comma-separated benchmarks to show (default: every result found)")
    parser.add_argument("--ijb-targets", help="comma-separated IJB targets to show, '' for none (default: every "
                        "result found)")
    args = parser.parse_args(argv)
    from faceflow.report.build import write_report

    paths = write_report(args.results_dir, args.out, _names(args.runs) or None, tensorboard=args.tensorboard,
                         benchmarks=_names(args.benchmarks), ijb_targets=_names(args.ijb_targets))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _names(value: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when the option was not given)."""
    return None if value is None else [name for name in value.split(",") if name]
