"""report.html: one self-contained page (tables plus base64-embedded PNG plots, no external files, no script)."""
from __future__ import annotations

import html
import re

from faceflow.report.contents import ReportContents
from faceflow.report.exports import export_rows
from faceflow.report.ijb import identification_rows, tar_rows
from faceflow.report.markdown import IJB_NOTE, SUMMARY_NOTE, TIMING_NOTE
from faceflow.report.plots import accuracy_plot, loss_plot, roc_plot, run_colours
from faceflow.report.runs import model_rows, training_rows
from faceflow.report.tables import MISSING, Table, bench_order, checkpoint_rows, summary_rows, title

# cells shown right-aligned: numbers, `95.00 ± 1.00`, `2.54*`, `1:02:03`, `3.10e-06`; `-` (nothing) centred
_NUMBER = re.compile(r"^[-+]?[\d.:]+(e[-+]?\d+)?( ± [\d.]+)?\*?$")
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
nav a { margin-right: 1em; }
.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 9px; text-align: left; white-space: nowrap; }
td.num { text-align: right; }
td.none { text-align: center; color: #888; }
th { background: #eee; }
th.varies { background: #fde7b0; }
tbody tr:nth-child(even) { background: #f7f7f7; }
td:first-child { font-weight: 600; }
.note { color: #555; font-size: 14px; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
img { max-width: 100%; height: auto; }
details { margin: 0.4em 0; }
summary { cursor: pointer; font-weight: 600; }
"""


def _td(cell: str) -> str:
    kind = ' class="num"' if _NUMBER.match(cell) else ' class="none"' if cell == MISSING else ""
    return f"<td{kind}>{html.escape(cell)}</td>"


def _table(table: Table, highlight: frozenset[int] = frozenset()) -> str:
    header, rows = table
    head = "".join(f'<th{" class=varies" if i in highlight else ""}>{html.escape(cell)}</th>'
                   for i, cell in enumerate(header))
    body = "".join("<tr>" + "".join(_td(cell) for cell in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _varying_columns(table: Table) -> frozenset[int]:
    """Columns (after the run name) whose values are not the same for every run."""
    header, rows = table
    return frozenset(i for i in range(1, len(header)) if len({row[i] for row in rows}) > 1)


def _image(png_base64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64}">'


def _section(anchor: str, heading: str, body: list[str]) -> list[str]:
    return [f'<h2 id="{anchor}">{html.escape(heading)}</h2>', *body]


def html_report(contents: ReportContents) -> str:
    """The whole HTML page."""
    accuracy, metrics = contents.accuracy, contents.metrics
    colours = run_colours([s.run for s in contents.runs] + list(accuracy["run"]) + list(metrics["run"]))
    sections: list[tuple[str, str, list[str]]] = []
    if accuracy.empty:
        sections.append(("summary", "Summary", ["<p>No validation results yet.</p>"]))
    else:
        sections.append(("summary", "Summary", [f'<p class="note">{html.escape(SUMMARY_NOTE)}</p>',
                                                _table(summary_rows(accuracy))]))
    if contents.runs:
        models, training = model_rows(contents.runs), training_rows(contents.runs)
        sections.append(("runs", "Runs", [
            '<p class="note">Highlighted columns differ between runs.</p>', _table(models, _varying_columns(models)),
            _table(training, _varying_columns(training)), f'<p class="note">{html.escape(TIMING_NOTE)}</p>']))
    if not accuracy.empty:
        benches = bench_order(sorted(accuracy["benchmark"].unique()))
        plots = [_image(accuracy_plot(accuracy, bench, colours, contents.evaluate_only), f"{title(bench)} accuracy")
                 for bench in benches]
        sections.append(("accuracy", "Accuracy vs step", ['<div class="plots">', *plots, "</div>"]))
    if not metrics.empty:
        sections.append(("loss", "Training loss", [_image(loss_plot(metrics, colours), "training loss")]))
    if contents.ijb:
        body = ["<h3>1:1 verification (TAR %)</h3>", _table(tar_rows(contents.ijb)),
                f'<p class="note">{html.escape(IJB_NOTE)}</p>', _image(roc_plot(contents.ijb, colours), "IJB ROC")]
        identification = identification_rows(contents.ijb)
        if identification is not None:
            body += ["<h3>1:N identification</h3>", _table(identification)]
        sections.append(("ijb", "IJB", body))
    if contents.exports:
        sections.append(("export", "Export parity", [
            '<p class="note">Embeddings of each exported model against OneFlow on the same images.</p>',
            _table(export_rows(contents.exports))]))
    if not accuracy.empty:
        body = [f"<details><summary>{html.escape(run)}</summary>{_table(checkpoint_rows(accuracy, run))}</details>"
                for run in sorted(accuracy["run"].unique())]
        sections.append(("checkpoints", "Per-checkpoint accuracy", body))
    nav = " ".join(f'<a href="#{anchor}">{html.escape(heading)}</a>' for anchor, heading, _ in sections)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">', '<link rel="icon" href="data:,">',
             f"<title>faceflow report</title><style>{_STYLE}</style></head><body>",
             "<h1>faceflow report</h1>", f"<nav>{nav}</nav>"]
    for anchor, heading, body in sections:
        parts += _section(anchor, heading, body)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
