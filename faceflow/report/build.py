"""Write results/report/{accuracy.csv, report.md, report.html}, each atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from faceflow.data.atomic import atomic_file
from faceflow.report.collect import load_accuracy, load_metrics
from faceflow.report.html import html_report
from faceflow.report.tables import markdown_report


def write_report(results_dir: str | Path, out_dir: str | Path, runs: Iterable[str] | None = None) -> dict[str, Path]:
    """Collect every run's validation results and loss curve and write the three report files."""
    runs = list(runs) if runs is not None else None
    accuracy = load_accuracy(results_dir, runs)
    metrics = load_metrics(results_dir, runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "accuracy.csv", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    contents = {
        "csv": accuracy.to_csv(index=False, float_format="%.6f"),
        "md": markdown_report(accuracy),
        "html": html_report(accuracy, metrics),
    }
    for key, path in paths.items():
        with atomic_file(path) as tmp:
            tmp.write_text(contents[key])
    return paths
