"""A results/ tree as the workflow leaves it, written by hand for the report tests: two trained runs of
different configurations, one evaluate-only (imported) model, per-checkpoint validation, training logs,
export parity records and IJB results in the formats their writers use."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.stats import norm

from faceflow.train.keys import DEFAULTS

BENCHES = ("lfw", "cfp_fp", "agedb_30")
TRAINED = {
    "r50_arcface": {"network": "r50", "embedding_size": 512, "loss": "arcface", "fc_mode": "model_parallel",
                    "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "lr_steps": [10, 20], "scales": [0.1, 0.01],
                    "warmup_steps": 5, "max_steps": 30, "device": "cuda", "fp16": True, "graph": True},
    "mbf_cosface_pfc": {"network": "mbf", "network_kwargs": {"width_mult": 0.25, "stem_stride": 4},
                        "loss": "cosface", "margins": {"s": 32.0}, "fc_mode": "partial_fc", "sample_rate": 0.3,
                        "batch_size": 32, "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.05,
                        "lr_schedule": "poly", "max_steps": 30, "tensorboard": False},
}
WORLD = {"r50_arcface": 2, "mbf_cosface_pfc": 1}
IMPORTED = "zoo_r100"
# run -> step -> bench -> accuracy
ACCURACY = {
    "r50_arcface": {10: {"lfw": 0.90, "cfp_fp": 0.80, "agedb_30": 0.70},
                    20: {"lfw": 0.97, "cfp_fp": 0.88, "agedb_30": 0.85},
                    30: {"lfw": 0.96, "cfp_fp": 0.89, "agedb_30": 0.84}},
    "mbf_cosface_pfc": {10: {"lfw": 0.80, "cfp_fp": 0.70, "agedb_30": 0.60},
                        20: {"lfw": 0.85, "cfp_fp": 0.75, "agedb_30": 0.65},
                        30: {"lfw": 0.88, "cfp_fp": 0.78, "agedb_30": 0.69}},
    IMPORTED: {0: {"lfw": 0.998, "cfp_fp": 0.985, "agedb_30": 0.981}},
}
IJB = {"r50_arcface": {"IJBC": 5.2, "IJBB": 4.9}, "mbf_cosface_pfc": {"IJBC": 4.0}, IMPORTED: {"IJBC": 6.0}}
FARS = ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1")
NEGATIVE_PAIRS = 200_000


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _checkpoint(run_dir: Path, step: int, config: dict[str, Any], state: dict[str, Any]) -> None:
    folder = run_dir / "checkpoints" / f"step_{step:06d}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _write_json(folder / "state.json", {"step": step, **state})


def binormal_roc(separation: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ROC (FPR on a log grid from 1e-7 to 1, TPR) of scores whose classes are `separation` apart."""
    fpr = np.concatenate([[0.0], np.logspace(-7, 0, 141)])
    return fpr, norm.cdf(separation + norm.ppf(fpr))


def ijb_record(run: str, target: str, separation: float) -> dict[str, Any]:
    """An IJB result in the `faceflow ijb --out` format (docs/DESIGN.md, IJB output)."""
    fpr, tpr = binormal_roc(separation)
    tar = {far: float(np.interp(float(far), fpr, tpr)) for far in FARS}
    return {
        "target": target, "ijb_dir": f"resources/ijb/{target}",
        "model": {"path": f"results/runs/{run}/export/model.onnx", "format": "onnx"},
        "protocol": "arcface_torch eval_ijbc 1:1", "images": 900, "templates": 120, "embedding_size": 512,
        "pairs": NEGATIVE_PAIRS + 4000, "positive_pairs": 4000, "negative_pairs": NEGATIVE_PAIRS,
        "min_far": 1.0 / NEGATIVE_PAIRS, "tar_at_far": tar, "auc": float(np.trapz(tpr, fpr)),
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": [None] + [0.5] * (len(fpr) - 1)},
        "identification": None if target == "IJBB" else {
            "probe_templates": 40, "galleries": {"G1": {}, "G2": {}},
            "mean": {"top_k": {"top1": 0.6 + 0.05 * separation, "top5": 0.8, "top10": 0.85},
                     "tpir_at_fpir": {"0.01": 0.3, "0.1": 0.5}}},
        "seconds": {"embed": 12.0, "total": 14.0},
    }


def _export(run_dir: Path, step: int, network: str) -> None:
    figures = {"max_abs_diff": 3.1e-6, "min_cosine": 0.99999994, "images": 8, "passed": True}
    _write_json(run_dir / "export" / "export.json", {
        "checkpoint": str(run_dir / "checkpoints" / f"step_{step:06d}"), "step": step, "network": network,
        "embedding_size": 512, "parity_images": 8, "min_cosine_required": 0.9999,
        "formats": {"onnx": {"path": "model.onnx", "opset": 11, **figures},
                    "mxnet": {"path": "mxnet/model-symbol.json", "epoch": 0, **figures}}})


def write_results(root: Path) -> Path:
    """Write the sample results tree under `root` (returned) and a stray run-less folder the report ignores."""
    runs = root / "runs"
    for run, overrides in TRAINED.items():
        run_dir = runs / run
        run_dir.mkdir(parents=True)
        config = {**DEFAULTS, **overrides}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for step in (10, 20, 30):
            _checkpoint(run_dir, step, config, {"epoch": 0, "world_size": WORLD[run], "loss": 1.0,
                                                "time": 1.7e9 + step, "graph": config["graph"], "total_steps": 30})
        _write_json(run_dir / "train.json", {"run": run, "steps": 30, "checkpoints": [
            f"checkpoints/step_{s:06d}" for s in (10, 20, 30)]})
        speed = 1000.0 if run == "r50_arcface" else 250.0
        lines = [{"step": s, "epoch": 0, "loss": 40.0 / s ** 0.5 + (run == "r50_arcface"), "lr": 0.1,
                  "samples_per_sec": speed * (0.5 if s == 1 else 1.0), "time": 1.7e9 + s, "elapsed": 60.0 * s}
                 for s in range(1, 31)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        _export(run_dir, 20, config["network"])
    imported = runs / IMPORTED
    _checkpoint(imported, 0, {"network": "r100", "embedding_size": 512,
                              "imported_from": "/models/glint360k_r100.onnx"},
                {"world_size": 1, "imported": {"max_abs_diff": 1e-6, "min_cosine": 0.9999999, "images": 4,
                                               "passed": True}})
    _write_json(imported / "train.json", {"run": IMPORTED, "steps": 0, "checkpoints": ["checkpoints/step_000000"]})
    _export(imported, 0, "r100")
    for run, steps in ACCURACY.items():
        for step, benches in steps.items():
            for bench, accuracy in benches.items():
                _write_json(runs / run / "validation" / f"step_{step:06d}" / f"{bench}.json", {
                    "benchmark": bench, "step": step, "accuracy": accuracy, "accuracy_std": 0.01,
                    "threshold": 1.23, "xnorm": 20.5 + step, "checkpoint": "x"})
    for run, targets in IJB.items():
        for target, separation in targets.items():
            _write_json(runs / run / "ijb" / f"{target}.json", ijb_record(run, target, separation))
    (runs / "stale").mkdir()
    return root
