"""IJB-B / IJB-C results of each run: results/runs/{run}/ijb/{target}.json as `faceflow ijb --out` writes them
(format: docs/DESIGN.md, "IJB output"): TAR@FAR tables, 1:N figures and the ROC curves."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from faceflow.errors import DataFormatError
from faceflow.report.collect import named_results, read_json_object, run_names
from faceflow.report.tables import MISSING, Table

IJB_DIR = "ijb"


@dataclass(frozen=True)
class IJBResult:
    """One run's 1:1 (and, when present, 1:N) result on one target."""

    run: str
    target: str
    tar_at_far: dict[float, float]
    min_far: float
    auc: float
    fpr: np.ndarray
    tpr: np.ndarray
    pairs: Optional[int]
    identification: Optional[dict[str, Any]]


def _curve(path: Path, roc: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(roc, dict) or "fpr" not in roc or "tpr" not in roc:
        raise DataFormatError(f"{path}: 'roc' needs 'fpr' and 'tpr' lists")
    try:
        fpr, tpr = np.asarray(roc["fpr"], dtype=float), np.asarray(roc["tpr"], dtype=float)
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: roc.fpr and roc.tpr must be lists of numbers") from None
    if fpr.ndim != 1 or fpr.shape != tpr.shape:
        raise DataFormatError(f"{path}: roc.fpr and roc.tpr must be lists of the same length")
    return fpr, tpr


def _result(run: str, path: Path) -> IJBResult:
    record = read_json_object(path)
    tars = record.get("tar_at_far")
    if not isinstance(tars, dict) or not tars:
        raise DataFormatError(f"{path}: no 'tar_at_far' mapping")
    try:
        tar_at_far = {float(far): float(tar) for far, tar in tars.items()}
    except (TypeError, ValueError):
        raise DataFormatError(f"{path}: tar_at_far must map FAR strings such as '1e-4' to numbers") from None
    fpr, tpr = _curve(path, record.get("roc"))
    pairs = record.get("pairs")
    identification = record.get("identification")
    return IJBResult(run, str(record.get("target", path.stem)), dict(sorted(tar_at_far.items())),
                     float(record.get("min_far") or 0.0), float(record.get("auc", math.nan)), fpr, tpr,
                     pairs if isinstance(pairs, int) else None,
                     identification if isinstance(identification, dict) else None)


def load_ijb(results_dir: str | Path, runs: Iterable[str] | None = None,
             targets: Iterable[str] | None = None) -> list[IJBResult]:
    """Every run's IJB results, by run then target (only `targets`' when given)."""
    results_dir = Path(results_dir)
    return [_result(run, path) for run in run_names(results_dir, runs)
            for path in named_results(results_dir / "runs" / run / IJB_DIR, targets)]


def far_label(far: float) -> str:
    """`1e-4` for 0.0001."""
    mantissa, exponent = f"{far:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tar_rows(results: list[IJBResult]) -> Table:
    """Header and rows of TAR (%) at each FAR (columns `@1e-4`), one row per run and target; `*` marks a FAR
    below 1 / negative pairs, where the TAR rests on the single highest impostor score."""
    fars = sorted({far for result in results for far in result.tar_at_far})
    header = ["run", "target"] + [f"@{far_label(far)}" for far in fars] + ["AUC"]
    rows = []
    for result in sorted(results, key=lambda r: (r.target, r.run)):
        cells = []
        for far in fars:
            tar = result.tar_at_far.get(far)
            cells.append(MISSING if tar is None else f"{100 * tar:.2f}{'*' if far < result.min_far else ''}")
        auc = f"{result.auc:.4f}" if math.isfinite(result.auc) else MISSING
        rows.append([result.run, result.target] + cells + [auc])
    return header, rows


def _percent(value: Any) -> str:
    return f"{100 * float(value):.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING


def identification_rows(results: list[IJBResult]) -> Optional[Table]:
    """Header and rows of the 1:N figures (mean over the galleries), or None when no result has them."""
    with_1n = [r for r in results if r.identification and isinstance(r.identification.get("mean"), dict)]
    if not with_1n:
        return None
    header = ["run", "target", "top-1 (%)", "top-5 (%)", "top-10 (%)", "TPIR@FPIR=0.01 (%)", "TPIR@FPIR=0.1 (%)"]
    rows = []
    for result in sorted(with_1n, key=lambda r: (r.target, r.run)):
        mean = result.identification["mean"]
        top_k, tpir = mean.get("top_k") or {}, mean.get("tpir_at_fpir") or {}
        rows.append([result.run, result.target] + [_percent(top_k.get(k)) for k in ("top1", "top5", "top10")]
                    + [_percent(tpir.get(k)) for k in ("0.01", "0.1")])
    return header, rows
