"""report.html: one self-contained page (tables plus base64-embedded PNG plots, no external files)."""
from __future__ import annotations

import html

import pandas as pd

from faceflow.report.plots import accuracy_plot, loss_plot
from faceflow.report.tables import checkpoint_rows, summary_rows

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; }
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(png_base64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64}">'


def html_report(accuracy: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """The whole HTML page."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>faceflow report</title><style>{_STYLE}</style></head><body>",
             "<h1>faceflow report</h1>"]
    if accuracy.empty:
        parts.append("<p>No validation results yet.</p>")
    else:
        parts.append("<p>Verification accuracy (mean ± std over 10 folds, %) of each run's best checkpoint.</p>")
        parts.append(_table(*summary_rows(accuracy)))
    if not metrics.empty:
        parts += ["<h2>Training loss</h2>", _image(loss_plot(metrics), "training loss")]
    for run in sorted(accuracy["run"].unique()):
        parts += [f"<h2>{html.escape(run)}</h2>", _image(accuracy_plot(accuracy, run), f"{run} accuracy"),
                  _table(*checkpoint_rows(accuracy, run))]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
