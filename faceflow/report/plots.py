"""Matplotlib figures of the report (accuracy vs step, loss curve) as base64 PNG strings."""
from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from faceflow.report.tables import bench_order, title  # noqa: E402


def _png_base64(figure: "plt.Figure") -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def accuracy_plot(accuracy: pd.DataFrame, run: str) -> str:
    """Accuracy vs checkpoint step of one run, one line per benchmark."""
    of_run = accuracy[accuracy["run"] == run]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for bench in bench_order(sorted(of_run["benchmark"].unique())):
        rows = of_run[of_run["benchmark"] == bench].sort_values("step")
        axes.errorbar(rows["step"], 100 * rows["accuracy"], yerr=100 * rows["std"], marker="o", capsize=3,
                      label=title(bench))
    axes.set_xlabel("step")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{run}: verification accuracy")
    axes.grid(alpha=0.3)
    axes.legend()
    return _png_base64(figure)


def loss_plot(metrics: pd.DataFrame) -> str:
    """Training loss vs step, one line per run."""
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for run in sorted(metrics["run"].unique()):
        rows = metrics[metrics["run"] == run].sort_values("step")
        axes.plot(rows["step"], rows["loss"], label=run)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("training loss")
    axes.grid(alpha=0.3)
    if not metrics.empty:
        axes.legend()
    return _png_base64(figure)
