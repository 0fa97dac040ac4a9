"""The export parity figures of each run: results/runs/{run}/export/export.json (`faceflow export bundle`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from faceflow.errors import DataFormatError
from faceflow.report.collect import read_json_object, run_names
from faceflow.report.tables import Table

EXPORT_RECORD = Path("export") / "export.json"


def _format_text(name: str, figures: dict[str, Any]) -> str:
    """`onnx (opset 11)`, `mxnet (epoch 0)`."""
    for key in ("opset", "epoch"):
        if key in figures:
            return f"{name} ({key} {figures[key]})"
    return name


def load_exports(results_dir: str | Path, runs: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One entry per run (by name) and exported format: run, step, format, max_abs_diff, min_cosine, images, passed."""
    results_dir = Path(results_dir)
    entries = []
    for run in sorted(run_names(results_dir, runs)):
        path = results_dir / "runs" / run / EXPORT_RECORD
        record = read_json_object(path)
        formats = record.get("formats", {})
        if not isinstance(formats, dict):
            raise DataFormatError(f"{path}: 'formats' is not a mapping")
        for name, figures in formats.items():
            try:
                difference, cosine = float(figures["max_abs_diff"]), float(figures["min_cosine"])
            except (KeyError, TypeError, ValueError):
                raise DataFormatError(f"{path}: formats.{name} needs numbers max_abs_diff and min_cosine") from None
            entries.append({"run": run, "step": record.get("step"), "format": _format_text(str(name), figures),
                            "max_abs_diff": difference, "min_cosine": cosine, "images": figures.get("images"),
                            "passed": bool(figures.get("passed", False)),
                            "required": record.get("min_cosine_required")})
    return entries


def export_rows(entries: list[dict[str, Any]]) -> Table:
    """Header and rows of the parity table: exported model vs OneFlow on the same images."""
    header = ["run", "step", "format", "images", "max abs diff", "min cosine", "parity"]
    rows = [[e["run"], str(e["step"]), e["format"], str(e["images"]), f"{e['max_abs_diff']:.2e}",
             f"{e['min_cosine']:.8f}", "passed" if e["passed"] else f"FAILED (needs {e['required']})"]
            for e in entries]
    return header, rows
