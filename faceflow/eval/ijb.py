"""IJB-B / IJB-C evaluation of one embedding function: read the layout, embed every crop once, build the
template features once, then score the 1:1 pairs (and 1:N when its files are there). What `faceflow ijb`
and the workflow's IJB job run; the JSON it returns is described in docs/DESIGN.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from faceflow.data.atomic import atomic_file
from faceflow.eval.ijb_features import Embed, image_features, template_features
from faceflow.eval.ijb_identification import identification_result
from faceflow.eval.ijb_layout import read_layout
from faceflow.eval.ijb_verification import pair_scores, verification_result

PROTOCOL = ("arcface_torch eval_ijbc: aligned crop + flip embeddings summed, times the detector score; "
            "media mean, template sum, L2 norm; cosine per pair; TAR at the ROC point of nearest FPR")


def evaluate_ijb(ijb_dir: str | Path, target: str, embed: Embed, batch_size: int = 128, threads: int = 2,
                 progress: bool = True, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready IJB result of `embed` on the benchmark `target` (IJBC or IJBB) under `ijb_dir`."""
    started = time.perf_counter()
    layout = read_layout(ijb_dir, target)
    features = image_features(layout, embed, batch_size, threads, progress)
    embedded = time.perf_counter()
    unique, template_feats = template_features(features, layout.scores, layout.templates, layout.medias)
    scores = pair_scores(unique, template_feats, layout.pairs, progress=progress)
    result: dict[str, Any] = {
        "target": target,
        "ijb_dir": str(layout.root),
        "model": model or {},
        "protocol": PROTOCOL,
        "images": len(layout.images),
        "templates": int(len(unique)),
        "embedding_size": int(features.shape[1]),
        **verification_result(scores, layout.labels),
        "identification": None,
    }
    if layout.probes is not None and layout.galleries is not None:
        result["identification"] = identification_result(unique, template_feats, layout.probes, layout.galleries)
    result["seconds"] = {"embed": round(embedded - started, 3), "total": round(time.perf_counter() - started, 3)}
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The lines `faceflow ijb` prints: TAR at each FAR, then the 1:N figures when present."""
    target = result["target"]
    lines = [f"[{target}] {result['templates']} templates, {result['pairs']} pairs "
             f"({result['positive_pairs']} same), {result['images']} images"]
    lines += [f"[{target}] TAR@FAR={label}: {tar:.4f}" for label, tar in result["tar_at_far"].items()]
    identification = result.get("identification")
    if identification:
        top, tpir = identification["mean"]["top_k"], identification["mean"]["tpir_at_fpir"]
        rates = ", ".join(f"TPIR@FPIR={label}: {value:.4f}" for label, value in tpir.items() if value is not None)
        lines.append(f"[{target}] 1:N top1 {top['top1']:.4f} top5 {top['top5']:.4f} top10 {top['top10']:.4f}; {rates}")
    return lines


def write_result(result: dict[str, Any], path: str | Path) -> None:
    """Write the result as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
