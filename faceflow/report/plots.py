"""Matplotlib figures of the report as base64 PNG strings: per benchmark accuracy vs step with every run, the
training loss of every run, and the IJB ROC curves of every run. A run keeps its colour in every figure."""
from __future__ import annotations

import base64
import io
from typing import Iterable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from faceflow.report.ijb import IJBResult  # noqa: E402
from faceflow.report.tables import title  # noqa: E402

_SIZE = (5.4, 3.4)


def _png_base64(figure: "plt.Figure") -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def run_colours(runs: Iterable[str]) -> dict[str, tuple]:
    """A fixed colour per run (sorted names; tab10, then tab20 for more than ten runs)."""
    names = sorted(set(runs))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _legend(axes: "plt.Axes", entries: int, handles: list | None = None, labels: list[str] | None = None) -> None:
    """The legend below the axes, in up to three columns (room for many runs without covering the curves)."""
    if not entries:
        return
    where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.2), "ncol": min(3, entries), "fontsize": "small",
             "frameon": False}
    if handles is None:
        axes.legend(**where)
    else:
        axes.legend(handles, labels, **where)


def _step_axis(axes: "plt.Axes", steps: pd.Series) -> None:
    """An x axis of whole steps (around a single step, matplotlib's ±0.1 margin would get ticks like 1.975)."""
    axes.set_xlabel("step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    if len(steps) and steps.max() == steps.min():
        axes.set_xlim(steps.min() - 1, steps.max() + 1)


def accuracy_plot(accuracy: pd.DataFrame, bench: str, colours: dict[str, tuple], reference_runs: set[str]) -> str:
    """Accuracy (%) vs checkpoint step on one benchmark, a line (± std band) per run; an evaluate-only run
    (`reference_runs`, validated once) is a dashed level across the plot."""
    of_bench = accuracy[accuracy["benchmark"] == bench]
    figure, axes = plt.subplots(figsize=_SIZE)
    runs = sorted(of_bench["run"].unique())
    for run in runs:
        rows = of_bench[of_bench["run"] == run].sort_values("step")
        mean, std = 100 * rows["accuracy"].to_numpy(), 100 * rows["std"].fillna(0).to_numpy()
        if run in reference_runs:
            axes.axhline(mean[-1], color=colours[run], linestyle="--", label=f"{run} (evaluate-only)")
            continue
        steps = rows["step"].to_numpy()
        axes.plot(steps, mean, marker="o", markersize=3, color=colours[run], label=run)
        axes.fill_between(steps, mean - std, mean + std, color=colours[run], alpha=0.15, linewidth=0)
    _step_axis(axes, of_bench[~of_bench["run"].isin(reference_runs)]["step"])
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{title(bench)}: verification accuracy")
    axes.grid(alpha=0.3)
    _legend(axes, len(runs))
    return _png_base64(figure)


def loss_plot(metrics: pd.DataFrame, colours: dict[str, tuple]) -> str:
    """Training loss vs step, one line per run."""
    figure, axes = plt.subplots(figsize=_SIZE)
    runs = sorted(metrics["run"].unique())
    for run in runs:
        rows = metrics[metrics["run"] == run].sort_values("step")
        axes.plot(rows["step"], pd.to_numeric(rows["loss"], errors="coerce"), color=colours[run], label=run)
    _step_axis(axes, metrics["step"])
    axes.set_ylabel("loss")
    axes.set_title("training loss")
    axes.grid(alpha=0.3)
    _legend(axes, len(runs))
    return _png_base64(figure)


def roc_plot(results: list[IJBResult], colours: dict[str, tuple]) -> str:
    """The IJB 1:1 ROC (TAR vs FAR, log FAR) of every run, one panel per target."""
    targets = sorted({result.target for result in results})
    figure, panels = plt.subplots(1, len(targets), figsize=(_SIZE[0] * len(targets), _SIZE[1]), squeeze=False,
                                  constrained_layout=True)
    for axes, target in zip(panels[0], targets):
        for result in sorted((r for r in results if r.target == target), key=lambda r: r.run):
            keep = result.fpr > 0
            axes.plot(result.fpr[keep], 100 * result.tpr[keep], color=colours[result.run], label=result.run)
            if result.min_far > 0:  # below 1 / negative pairs the curve rests on single impostor scores
                axes.axvline(result.min_far, color=colours[result.run], alpha=0.3, linestyle=":")
        axes.set_xscale("log")
        low = min((r.fpr[r.fpr > 0].min() for r in results if r.target == target and np.any(r.fpr > 0)),
                  default=1e-6)
        axes.set_xlim(max(low, 1e-7), 1.0)
        axes.set_xlabel("FAR")
        axes.set_ylabel("TAR (%)")
        axes.set_title(f"{target}: 1:1 verification ROC")
        axes.grid(alpha=0.3)
    runs = sorted({result.run for result in results})
    _legend(panels[0][0], len(runs), [Line2D([0], [0], color=colours[run]) for run in runs], runs)
    return _png_base64(figure)
