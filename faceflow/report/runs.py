"""What each run is, side by side: its training configuration, its kind (trained or evaluate-only), wall time
and speed, read from results/runs/{run}/{config.yaml, train.json, checkpoints/step_N/state.json, metrics.jsonl}.

An evaluate-only run (a published model put through validation without training, `faceflow import ...
--as-run`) has one checkpoint whose config names `imported_from` and no training log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from faceflow.checkpoint import MANIFEST, list_checkpoints
from faceflow.errors import ConfigError
from faceflow.heads.registry import margin_values
from faceflow.report.collect import read_json_object, read_yaml_mapping, run_names
from faceflow.report.tables import MISSING, Table


@dataclass(frozen=True)
class RunSummary:
    """One run's configuration (the resolved training config, or an imported checkpoint's) and timing."""

    run: str
    config: dict[str, Any]
    state: dict[str, Any]
    steps: Optional[int]
    wall_seconds: float
    samples_per_sec: float

    @property
    def evaluate_only(self) -> bool:
        """A published model validated without training (imported as a run)."""
        return "imported_from" in self.config


def _column(metrics: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(metrics[name], errors="coerce").dropna() if name in metrics else pd.Series(dtype=float)


def timing(metrics: pd.DataFrame) -> tuple[float, float]:
    """(wall seconds, samples/s) of one run's log lines, in step order: the last line's `elapsed` (resumes
    included; a log without it: the span of its time stamps), and the median speed over the lines (robust
    to the first interval's start-up and to validation pauses)."""
    speeds, elapsed, times = (_column(metrics, name) for name in ("samples_per_sec", "elapsed", "time"))
    speed = float(speeds.median()) if len(speeds) else math.nan
    if len(elapsed):
        return float(elapsed.iloc[-1]), speed
    return (float(times.iloc[-1] - times.iloc[0]) if len(times) > 1 else math.nan), speed


def load_runs(results_dir: str | Path, metrics: pd.DataFrame, runs: Optional[list[str]] = None) -> list[RunSummary]:
    """A RunSummary per run directory holding run outputs (or per name of `runs`), by name; `metrics` is
    `collect.load_metrics`'s table."""
    results_dir = Path(results_dir)
    summaries = []
    for run in sorted(run_names(results_dir, runs)):
        folder = results_dir / "runs" / run
        found = list_checkpoints(folder / "checkpoints")
        last = found[-1][1] if found else None
        config = read_yaml_mapping(folder / "config.yaml") or (read_yaml_mapping(last / "config.yaml") if last else {})
        state = read_json_object(last / "state.json") if last else {}
        manifest = read_json_object(folder / MANIFEST)
        steps = manifest.get("steps", state.get("total_steps"))
        of_run = metrics[metrics["run"] == run] if not metrics.empty else metrics
        if not (config or state or len(of_run)):
            continue  # a folder without run outputs
        wall, speed = timing(of_run)
        summaries.append(RunSummary(run, config, state, int(steps) if isinstance(steps, int) else None, wall, speed))
    return summaries


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _mapping_text(values: Any) -> str:
    if not isinstance(values, dict):
        return str(values)
    return ", ".join(f"{key} {_g(value)}" for key, value in values.items())


def _loss_text(config: dict[str, Any]) -> str:
    loss = config.get("loss")
    if not isinstance(loss, str):
        return MISSING if loss is None else str(loss)
    try:
        margins = margin_values(loss, config.get("margins"))
    except ConfigError:  # a loss or margins this faceflow does not know: show what the run set
        margins = config.get("margins")
    return f"{loss} ({_mapping_text(margins)})" if margins else loss


def _network_text(config: dict[str, Any]) -> str:
    kwargs = config.get("network_kwargs") or {}
    text = str(config.get("network", MISSING))
    return f"{text} ({_mapping_text(kwargs)})" if isinstance(kwargs, dict) and kwargs else text


def _fc_text(config: dict[str, Any]) -> str:
    mode = config.get("fc_mode")
    if mode is None:
        return MISSING
    return f"{mode} {_g(config.get('sample_rate', 1.0))}" if mode == "partial_fc" else str(mode)


def _batch_text(summary: RunSummary) -> str:
    batch, world = summary.config.get("batch_size"), summary.state.get("world_size")
    if batch is None or summary.evaluate_only:
        return MISSING
    if not (isinstance(world, int) and isinstance(batch, int)):
        return f"{world if isinstance(world, int) else '?'} x {batch}"
    return f"{world} x {batch} = {world * batch}"


def _optimizer_text(config: dict[str, Any]) -> str:
    name = config.get("optimizer")
    if name is None:
        return MISSING
    parts = [f"lr {_g(config.get('lr'))}"]
    if name == "sgd":
        parts.append(f"momentum {_g(config.get('momentum'))}")
    parts.append(f"wd {_g(config.get('weight_decay'))}")
    if config.get("clip_grad_norm") is not None:
        parts.append(f"clip {_g(config['clip_grad_norm'])}")
    return f"{name} ({', '.join(parts)})"


def _schedule_text(config: dict[str, Any]) -> str:
    schedule = config.get("lr_schedule")
    if schedule is None:
        return MISSING
    if schedule == "poly":
        text = f"poly (power {_g(config.get('power'))})"
    else:
        changes = [f"x{_g(s)} at {step}" for step, s in zip(config.get("lr_steps") or [], config.get("scales") or [])]
        text = f"multistep ({', '.join(changes)})" if changes else "constant"
    warmup = config.get("warmup_steps") or 0
    return f"{text}, warmup {warmup}" if warmup else text


def _kind_text(summary: RunSummary) -> str:
    if summary.evaluate_only:
        return f"evaluate-only ({Path(str(summary.config['imported_from'])).name})"
    config = summary.config
    if not config:
        return MISSING
    modes = [str(config.get("device", "?")), "graph" if config.get("graph") else "eager"]
    if config.get("fp16"):
        modes.append("fp16")
    return f"trained ({', '.join(modes)})"


def _duration_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return MISSING
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def model_rows(summaries: list[RunSummary]) -> Table:
    """Header and rows of what each run trains (or evaluates): kind, network, embedding, loss and FC layout."""
    header = ["run", "kind", "network", "embedding", "loss (margins)", "FC"]
    rows = []
    for summary in summaries:
        config, trained = summary.config, not summary.evaluate_only
        rows.append([summary.run, _kind_text(summary), _network_text(config),
                     _g(config.get("embedding_size", MISSING)), _loss_text(config) if trained else MISSING,
                     _fc_text(config) if trained else MISSING])
    return header, rows


def training_rows(summaries: list[RunSummary]) -> Table:
    """Header and rows of how each run trained: processes x batch, optimizer, LR schedule, steps, time, speed."""
    header = ["run", "processes x batch", "optimizer", "LR schedule", "steps", "wall time", "samples/s"]
    rows = []
    for summary in summaries:
        config, trained = summary.config, not summary.evaluate_only
        rows.append([summary.run, _batch_text(summary), _optimizer_text(config) if trained else MISSING,
                     _schedule_text(config) if trained else MISSING,
                     str(summary.steps) if trained and summary.steps is not None else MISSING,
                     _duration_text(summary.wall_seconds),
                     f"{summary.samples_per_sec:.1f}" if math.isfinite(summary.samples_per_sec) else MISSING])
    return header, rows
