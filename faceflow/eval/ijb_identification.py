"""IJB 1:N identification, as InsightFace's `ijb_evals.py` scores it: every probe template against each
gallery (G1/G2 for IJB-C, S1/S2 for IJB-B) by cosine; top-1/5/10 identification rate over the probes whose
subject is in that gallery; TPIR at FPIR 0.01 / 0.1 (a mated probe counts when its true template ranks first
and scores above the threshold that lets the FPIR fraction of non-mated probes' best scores through).
Probes are scored in blocks, so memory stays linear in the number of gallery templates.
"""
from __future__ import annotations

import numpy as np

from faceflow.eval.ijb_features import template_rows
from faceflow.eval.ijb_layout import TemplateSet

FPIRS = {"0.01": 0.01, "0.1": 0.1}
TOP_K = (1, 5, 10)
PROBE_BLOCK = 4096


def _probe_statistics(probe_features: np.ndarray, probe_subjects: np.ndarray, gallery_features: np.ndarray,
                      gallery_subjects: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per probe: mated?, rank of its true template (0 = first), its score, best other score, best score overall."""
    n = len(probe_features)
    mated = np.isin(probe_subjects, gallery_subjects)
    rank = np.full(n, -1, np.int64)
    true_score = np.full(n, np.nan)
    best_other = np.full(n, np.nan)
    best = np.empty(n)
    order = np.argsort(gallery_subjects)
    for start in range(0, n, PROBE_BLOCK):
        block = slice(start, min(start + PROBE_BLOCK, n))
        similarity = probe_features[block] @ gallery_features.T
        best[block] = similarity.max(axis=1)
        rows = np.flatnonzero(mated[block])
        if not len(rows):
            continue
        true_col = order[np.searchsorted(gallery_subjects[order], probe_subjects[block][rows])]
        sims = similarity[rows]
        own = sims[np.arange(len(rows)), true_col]
        sims[np.arange(len(rows)), true_col] = -np.inf
        index = start + rows
        rank[index] = np.sum(sims > own[:, None], axis=1)
        true_score[index] = own
        best_other[index] = sims.max(axis=1) if sims.shape[1] else -np.inf
    return mated, rank, true_score, best_other, best


def gallery_result(probe_features: np.ndarray, probe_subjects: np.ndarray, gallery_features: np.ndarray,
                   gallery_subjects: np.ndarray) -> dict:
    """Top-k rates, TPIR at each FPIR (with its threshold) and probe counts for one gallery (JSON-ready)."""
    mated, rank, true_score, best_other, best = _probe_statistics(
        probe_features, probe_subjects, gallery_features, gallery_subjects)
    n_mated = int(mated.sum())
    result: dict = {"mated_probes": n_mated, "non_mated_probes": int((~mated).sum()),
                    "gallery_templates": len(gallery_subjects)}
    result["top_k"] = {f"top{k}": float(np.mean(rank[mated] < k)) if n_mated else None for k in TOP_K}
    result["top_k_counts"] = {f"top{k}": int(np.sum(rank[mated] < k)) for k in TOP_K}
    non_mated_best = np.sort(best[~mated])[::-1]
    result["tpir_at_fpir"], result["thresholds"] = {}, {}
    for label, fpir in FPIRS.items():
        if not len(non_mated_best) or not n_mated:
            result["tpir_at_fpir"][label] = result["thresholds"][label] = None
            continue
        threshold = float(non_mated_best[max(int(len(non_mated_best) * fpir) - 1, 0)])
        hits = (true_score[mated] > best_other[mated]) & (true_score[mated] > threshold)
        result["tpir_at_fpir"][label] = float(hits.mean())
        result["thresholds"][label] = threshold
    return result


def identification_result(unique: np.ndarray, features: np.ndarray, probes: TemplateSet,
                          galleries: dict[str, TemplateSet]) -> dict:
    """Per gallery results and their combination: top-k over all mated probes of both galleries, mean TPIR."""
    probe_features = features[template_rows(unique, probes.templates)]
    out: dict = {"probe_templates": len(probes.templates), "galleries": {}}
    for name, gallery in galleries.items():
        out["galleries"][name] = gallery_result(probe_features, probes.subjects,
                                                features[template_rows(unique, gallery.templates)], gallery.subjects)
    results = list(out["galleries"].values())
    mated = sum(r["mated_probes"] for r in results)
    out["mean"] = {
        "top_k": {f"top{k}": sum(r["top_k_counts"][f"top{k}"] for r in results) / mated if mated else None
                  for k in TOP_K},
        "tpir_at_fpir": {label: (float(np.mean([r["tpir_at_fpir"][label] for r in results]))
                                 if all(r["tpir_at_fpir"][label] is not None for r in results) else None)
                         for label in FPIRS},
    }
    return out
