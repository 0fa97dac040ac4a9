"""Accuracy tables: the seed's per-run table (best checkpoint) and per-checkpoint tables, as Markdown."""
from __future__ import annotations

import pandas as pd

from faceflow.eval.benchmark_names import BENCHMARK_TITLES


def bench_order(benchmarks: list[str]) -> list[str]:
    """Benchmarks in the seed's column order (LFW, CFP-FP, AgeDB-30), then any others."""
    known = [b for b in BENCHMARK_TITLES if b in benchmarks]
    return known + sorted(b for b in benchmarks if b not in BENCHMARK_TITLES)


def title(bench: str) -> str:
    """Display name of a benchmark."""
    return BENCHMARK_TITLES.get(bench, bench)


def best_checkpoints(accuracy: pd.DataFrame) -> pd.DataFrame:
    """Per run, the checkpoint with the highest mean accuracy over benchmarks (later step on ties)."""
    if accuracy.empty:
        return pd.DataFrame(columns=["run", "step", "mean"])
    means = accuracy.groupby(["run", "step"], as_index=False)["accuracy"].mean().rename(columns={"accuracy": "mean"})
    means = means.sort_values(["run", "mean", "step"], ascending=[True, False, False], kind="stable")
    return means.groupby("run", as_index=False).head(1).reset_index(drop=True)


def _cell(row: pd.DataFrame) -> str:
    if row.empty:
        return "-"
    value = row.iloc[0]
    return f"{100 * value['accuracy']:.2f} ± {100 * value['std']:.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary_rows(accuracy: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the seed's table: per run, its best checkpoint's accuracy on each benchmark."""
    benches = bench_order(sorted(accuracy["benchmark"].unique()))
    header = ["run", "best step"] + [f"{title(b)} (%)" for b in benches]
    rows = []
    for best in best_checkpoints(accuracy).itertuples():
        at = accuracy[(accuracy["run"] == best.run) & (accuracy["step"] == best.step)]
        rows.append([best.run, str(best.step)] + [_cell(at[at["benchmark"] == b]) for b in benches])
    return header, rows


def checkpoint_rows(accuracy: pd.DataFrame, run: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one run's per-checkpoint table (accuracy ± std, XNorm per benchmark)."""
    of_run = accuracy[accuracy["run"] == run]
    benches = bench_order(sorted(of_run["benchmark"].unique()))
    header = ["step"] + [f"{title(b)} (%)" for b in benches] + [f"{title(b)} XNorm" for b in benches]
    rows = []
    for step in sorted(of_run["step"].unique()):
        at = of_run[of_run["step"] == step]
        xnorms = []
        for bench in benches:
            row = at[at["benchmark"] == bench]
            xnorms.append("-" if row.empty else f"{row.iloc[0]['xnorm']:.2f}")
        rows.append([str(step)] + [_cell(at[at["benchmark"] == b]) for b in benches] + xnorms)
    return header, rows


def markdown_report(accuracy: pd.DataFrame) -> str:
    """report.md: the summary table, then one per-checkpoint table per run."""
    lines = ["# faceflow report", ""]
    if accuracy.empty:
        return "\n".join(lines + ["No validation results yet.", ""])
    lines += [
        "Verification accuracy (mean ± std over 10 folds, %) of each run's best checkpoint "
        "(highest mean over the benchmarks).",
        "",
    ]
    lines += _markdown(*summary_rows(accuracy))
    for run in sorted(accuracy["run"].unique()):
        lines += ["", f"## {run}", ""]
        lines += _markdown(*checkpoint_rows(accuracy, run))
    return "\n".join(lines) + "\n"
