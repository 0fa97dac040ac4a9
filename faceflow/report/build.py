"""Write results/report/{accuracy.csv, report.md, report.html}, each atomically, and optionally the TensorBoard
events of the per-checkpoint validation (results/runs/{run}/tensorboard/checkpoints)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from faceflow.data.atomic import atomic_file
from faceflow.report.contents import ReportContents, collect_report
from faceflow.report.html import html_report
from faceflow.report.markdown import markdown_report


def write_validation_events(results_dir: str | Path, contents: ReportContents) -> list[Path]:
    """Per run with validation results (and `tensorboard` not switched off in its config), replace
    RUN/tensorboard/checkpoints with events of its per-checkpoint accuracy and XNorm; returns the folders."""
    from faceflow.train.tensorboard import write_checkpoint_events

    configs = {summary.run: summary.config for summary in contents.runs}
    written = []
    for run, rows in contents.accuracy.groupby("run"):
        if configs.get(run, {}).get("tensorboard", True) is False:
            continue
        records = rows[["step", "benchmark", "accuracy", "xnorm"]].to_dict("records")
        written.append(write_checkpoint_events(Path(results_dir) / "runs" / str(run), records))
    return written


def write_report(results_dir: str | Path, out_dir: str | Path, runs: Iterable[str] | None = None,
                 tensorboard: bool = False, benchmarks: Iterable[str] | None = None,
                 ijb_targets: Iterable[str] | None = None) -> dict[str, Path]:
    """Collect every run's results (only `benchmarks` and `ijb_targets` when given) and write the three report
    files (and, with `tensorboard`, the events)."""
    contents = collect_report(results_dir, runs, benchmarks, ijb_targets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "accuracy.csv", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    texts = {
        "csv": contents.accuracy.to_csv(index=False, float_format="%.6f"),
        "md": markdown_report(contents),
        "html": html_report(contents),
    }
    for key, path in paths.items():
        with atomic_file(path) as tmp:
            tmp.write_text(texts[key])
    if tensorboard:
        for folder in write_validation_events(results_dir, contents):
            paths[f"tensorboard:{folder.parent.parent.name}"] = folder
    return paths
