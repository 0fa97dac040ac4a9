"""report.md: the InsightFace-style summary table first, then the runs side by side, IJB, export parity and
one per-checkpoint table per run."""
from __future__ import annotations

from faceflow.report.contents import ReportContents
from faceflow.report.exports import export_rows
from faceflow.report.ijb import identification_rows, tar_rows
from faceflow.report.runs import model_rows, training_rows
from faceflow.report.tables import Table, checkpoint_rows, summary_rows

SUMMARY_NOTE = ("Verification accuracy (mean ± std over 10 folds, %) of each run's best checkpoint "
                "(highest mean over the benchmarks).")
TIMING_NOTE = ("Wall time counts every segment of a resumed run (to its last log line); samples/s is the median "
               "over the training log lines.")
IJB_NOTE = ("TAR (%) at each FAR (@1e-4: at FAR = 1e-4). A * marks a FAR below 1 / negative pairs, where the "
            "TAR rests on the single highest impostor score (the dotted lines of the ROC plot).")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def markdown_table(table: Table) -> list[str]:
    """A Markdown table's lines (cells with `|` escaped and line breaks folded, whatever the input held)."""
    header, rows = table
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]


def markdown_report(contents: ReportContents) -> str:
    """The whole report.md."""
    accuracy = contents.accuracy
    lines = ["# faceflow report", ""]
    if accuracy.empty:
        lines += ["No validation results yet.", ""]
    else:
        lines += [SUMMARY_NOTE, ""] + markdown_table(summary_rows(accuracy)) + [""]
    if contents.runs:
        lines += ["## Runs", ""] + markdown_table(model_rows(contents.runs)) + [""]
        lines += markdown_table(training_rows(contents.runs)) + ["", TIMING_NOTE, ""]
    if contents.ijb:
        lines += ["## IJB 1:1 verification (TAR %)", ""] + markdown_table(tar_rows(contents.ijb)) + ["", IJB_NOTE, ""]
        identification = identification_rows(contents.ijb)
        if identification is not None:
            lines += ["## IJB 1:N identification", ""] + markdown_table(identification) + [""]
    if contents.exports:
        lines += ["## Export parity (against OneFlow)", ""] + markdown_table(export_rows(contents.exports)) + [""]
    for run in sorted(accuracy["run"].unique()):
        lines += [f"## {_cell(run)}", ""] + markdown_table(checkpoint_rows(accuracy, run)) + [""]
    return "\n".join(lines)
