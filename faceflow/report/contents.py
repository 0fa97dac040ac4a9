"""Everything the report shows, read once from RESULTS_DIR: validation accuracy, training logs, the runs'
configurations, export parity and IJB results; the Markdown and HTML pages are both drawn from it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from faceflow.report.collect import load_accuracy, load_metrics
from faceflow.report.exports import load_exports
from faceflow.report.ijb import IJBResult, load_ijb
from faceflow.report.runs import RunSummary, load_runs


@dataclass(frozen=True)
class ReportContents:
    """The collected tables of one report."""

    accuracy: pd.DataFrame
    metrics: pd.DataFrame
    runs: list[RunSummary]
    exports: list[dict[str, Any]]
    ijb: list[IJBResult]

    @property
    def evaluate_only(self) -> set[str]:
        """Names of the evaluate-only runs (published models validated without training)."""
        return {summary.run for summary in self.runs if summary.evaluate_only}


def collect_report(results_dir: str | Path, runs: Iterable[str] | None = None,
                   benchmarks: Iterable[str] | None = None, ijb_targets: Iterable[str] | None = None) -> ReportContents:
    """Read every run's outputs under RESULTS_DIR/runs (or those of `runs`; only `benchmarks` and `ijb_targets`
    when given, so results of names no longer configured are not shown)."""
    names = list(runs) if runs is not None else None
    metrics = load_metrics(results_dir, names)
    return ReportContents(load_accuracy(results_dir, names, benchmarks), metrics,
                          load_runs(results_dir, metrics, names), load_exports(results_dir, names),
                          load_ijb(results_dir, names, ijb_targets))
