"""Read run outputs (validation JSON files, metrics.jsonl) into pandas tables; the readers of the run's
JSON and YAML files, whose errors name the file."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from faceflow.errors import DataFormatError, FaceflowError

ACCURACY_COLUMNS = ["run", "step", "benchmark", "accuracy", "std", "threshold", "xnorm"]
_STEP_DIR = re.compile(r"^step_(\d+)$")


def run_names(results_dir: Path, runs: Iterable[str] | None) -> list[str]:
    """The runs to report: every directory under RESULTS/runs, or the names given (each must exist)."""
    runs_dir = results_dir / "runs"
    if runs is not None:
        names = list(runs)
        for name in names:
            if not (runs_dir / name).is_dir():
                raise FaceflowError(f"{runs_dir / name}: no such run directory (--runs)")
        return names
    return sorted(p.name for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []


def named_results(folder: Path, names: Iterable[str] | None) -> list[Path]:
    """The result files `folder/{name}.json`, sorted: every one there, or only those of `names` (so results
    of a benchmark or IJB target dropped from the config stay out of the report)."""
    if not folder.is_dir():
        return []
    wanted = set(names) if names is not None else None
    return [path for path in sorted(folder.glob("*.json")) if wanted is None or path.stem in wanted]


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path` ({} when the file does not exist); DataFormatError naming the file otherwise."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object")
    return data


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The YAML mapping in `path` ({} when the file does not exist); DataFormatError naming the file otherwise."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise DataFormatError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is not None and not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a mapping")
    return data or {}


def _records(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise DataFormatError(f"{path}: not valid JSON ({err})") from None
    records = data if isinstance(data, list) else [data]
    for record in records:
        for key in ("benchmark", "accuracy"):
            if not isinstance(record, dict) or key not in record:
                raise DataFormatError(f"{path}: validation result without {key!r}")
    return records


def load_accuracy(results_dir: str | Path, runs: Iterable[str] | None = None,
                  benchmarks: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run x checkpoint step x benchmark from runs/{run}/validation/step_N/{bench}.json (only
    `benchmarks`' when given)."""
    results_dir = Path(results_dir)
    rows = []
    for run in run_names(results_dir, runs):
        validation = results_dir / "runs" / run / "validation"
        for step_dir in sorted(validation.glob("step_*")) if validation.is_dir() else []:
            match = _STEP_DIR.match(step_dir.name)
            if not match:
                continue
            for path in named_results(step_dir, benchmarks):
                for record in _records(path):
                    rows.append({
                        "run": run,
                        "step": int(record.get("step", match.group(1))),
                        "benchmark": str(record["benchmark"]),
                        "accuracy": float(record["accuracy"]),
                        "std": float(record.get("accuracy_std", float("nan"))),
                        "threshold": float(record.get("threshold", float("nan"))),
                        "xnorm": float(record.get("xnorm", float("nan"))),
                    })
    frame = pd.DataFrame(rows, columns=ACCURACY_COLUMNS)
    return frame.sort_values(["run", "step", "benchmark"], kind="stable").reset_index(drop=True)


def load_metrics(results_dir: str | Path, runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Training log lines (run, step, loss, lr, samples_per_sec, ...) from runs/{run}/metrics.jsonl."""
    results_dir = Path(results_dir)
    rows = []
    for run in run_names(results_dir, runs):
        path = results_dir / "runs" / run / "metrics.jsonl"
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise DataFormatError(f"{path}:{number}: not a JSON object") from None
            if isinstance(record, dict) and "step" in record and "loss" in record:
                rows.append({"run": run, **record})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["run", "step", "loss"])
    return frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True)
