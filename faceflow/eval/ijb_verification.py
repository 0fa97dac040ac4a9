"""IJB 1:1 verification: cosine scores of template pairs in fixed-size batches, the ROC over all pairs
(sklearn), TAR at FAR 1e-6 ... 1e-1 as arcface_torch reads it (the TPR of the ROC point whose FPR is
nearest the FAR; of equally near points, the one with the highest TPR), and a downsampled ROC for plots.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, roc_curve
from tqdm import tqdm

from faceflow.eval.ijb_features import template_rows

FARS = {"1e-6": 1e-6, "1e-5": 1e-5, "1e-4": 1e-4, "1e-3": 1e-3, "1e-2": 1e-2, "1e-1": 1e-1}
PAIR_BATCH = 100_000
PAIR_BATCH_VALUES = 1 << 24  # at most this many values (128 MiB float64) in a gathered batch or a Gram block
DENSE_FACTOR = 64  # Gram blocks when templates^2 <= DENSE_FACTOR x pairs: time stays linear in the pairs
ROC_POINTS_PER_DECADE = 20
ROC_MIN_FPR_DECADE = -7


def pair_scores(unique: np.ndarray, features: np.ndarray, pairs: np.ndarray, batch: int = PAIR_BATCH,
                progress: bool = False, blocked: bool | None = None) -> np.ndarray:
    """Cosine score (float64) of every template pair; memory stays bounded whatever the number of pairs.

    Pairs that are dense among the templates (IJB-B/C: a few percent of all template products) are read from
    row blocks of the template Gram matrix, one matrix product per block of first templates; sparse pair sets
    gather the two features of at most `batch` pairs at a time (fewer for wide features). `blocked=None`
    chooses by density; both give the same scores.
    """
    first, second = template_rows(unique, pairs[:, 0]), template_rows(unique, pairs[:, 1])
    scores = np.empty(len(pairs), np.float64)
    if blocked or (blocked is None and len(unique) ** 2 <= DENSE_FACTOR * len(pairs)):
        order = np.argsort(first, kind="stable")
        sorted_first = first[order]
        rows = max(1, PAIR_BATCH_VALUES // max(len(unique), 1))
        for start in tqdm(range(0, len(unique), rows), unit="block", desc="pairs", disable=not progress,
                          mininterval=1.0):
            lo, hi = np.searchsorted(sorted_first, [start, start + rows])
            if lo == hi:
                continue
            picked = order[lo:hi]
            gram = features[start:start + rows] @ features.T
            scores[picked] = gram[first[picked] - start, second[picked]]
        return scores
    batch = max(1, min(batch, PAIR_BATCH_VALUES // max(features.shape[1], 1)))
    for start in tqdm(range(0, len(pairs), batch), unit="batch", desc="pairs", disable=not progress, mininterval=1.0):
        rows = slice(start, start + batch)
        scores[rows] = np.einsum("ij,ij->i", features[first[rows]], features[second[rows]])
    return scores


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, fars: dict[str, float] = FARS) -> dict[str, float]:
    """TPR at the ROC point with the FPR nearest each FAR (ties: the highest TPR, as arcface_torch)."""
    fpr_desc, tpr_desc = fpr[::-1], tpr[::-1]
    return {label: float(tpr_desc[np.argmin(np.abs(fpr_desc - far))]) for label, far in fars.items()}


def downsample_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> dict[str, list[float]]:
    """About ROC_POINTS_PER_DECADE points per decade of FPR (log-spaced from 1e-7 to 1): at each grid FPR, the
    last ROC point at or below it (its highest TPR); the first and last ROC points are always kept."""
    grid = np.logspace(ROC_MIN_FPR_DECADE, 0, -ROC_MIN_FPR_DECADE * ROC_POINTS_PER_DECADE + 1)
    picks = np.searchsorted(fpr, grid, side="right") - 1
    keep = np.unique(np.r_[0, picks[picks >= 0], len(fpr) - 1])
    finite = np.where(np.isfinite(thresholds[keep]), thresholds[keep], np.nan)
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(),
            "threshold": [None if np.isnan(t) else float(t) for t in finite]}


def verification_result(scores: np.ndarray, labels: np.ndarray) -> dict:
    """TAR@FAR, AUC, pair counts and the downsampled ROC of 1:1 scores (JSON-ready)."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    positives = int(np.sum(labels == 1))
    negatives = int(len(labels) - positives)
    return {
        "pairs": int(len(labels)),
        "positive_pairs": positives,
        "negative_pairs": negatives,
        "min_far": 1.0 / negatives if negatives else None,
        "tar_at_far": tar_at_far(fpr, tpr),
        "auc": float(auc(fpr, tpr)),
        "roc": downsample_roc(fpr, tpr, thresholds),
    }
