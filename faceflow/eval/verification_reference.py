"""Plain-loop reference of the verification protocol, written like InsightFace's eval/verification.py.

Slow on purpose (one pass over the pairs per threshold and fold): the tests check that
`faceflow.eval.verification` gives the same numbers, and bench/eval.py measures the speed-up.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from faceflow.eval.verification import (
    FAR_TARGET,
    N_FOLDS,
    VerificationResult,
    accuracy_thresholds,
    far_threshold,
    normalized_pair_embeddings,
    pair_distances,
    val_thresholds,
)


def calculate_accuracy(threshold: float, dist: np.ndarray, actual_issame: np.ndarray) -> float:
    """Accuracy of `dist < threshold` as the same-identity prediction."""
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    return float(tp + tn) / dist.size


def calculate_val_far(threshold: float, dist: np.ndarray, actual_issame: np.ndarray) -> tuple[float, float]:
    """True-accept and false-accept rates at one threshold (0 when a class is absent)."""
    predict_issame = np.less(dist, threshold)
    true_accept = np.sum(np.logical_and(predict_issame, actual_issame))
    false_accept = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    n_same = np.sum(actual_issame)
    n_diff = np.sum(np.logical_not(actual_issame))
    val = float(true_accept) / float(n_same) if n_same else 0.0
    far = float(false_accept) / float(n_diff) if n_diff else 0.0
    return val, far


def calculate_roc(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold held-out accuracy and the threshold chosen on the other folds."""
    accuracy, best_thresholds = np.zeros(n_folds), np.zeros(n_folds)
    indices = np.arange(len(dist))
    for fold, (train, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(indices)):
        acc_train = np.zeros(len(thresholds))
        for j, threshold in enumerate(thresholds):
            acc_train[j] = calculate_accuracy(threshold, dist[train], issame[train])
        best = int(np.argmax(acc_train))
        best_thresholds[fold] = thresholds[best]
        accuracy[fold] = calculate_accuracy(thresholds[best], dist[test], issame[test])
    return accuracy, best_thresholds


def calculate_val(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray, far_target: float, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold VAL and FAR at the threshold interpolated to `far_target` on the other folds."""
    val, far = np.zeros(n_folds), np.zeros(n_folds)
    indices = np.arange(len(dist))
    for fold, (train, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(indices)):
        far_train = np.zeros(len(thresholds))
        for j, threshold in enumerate(thresholds):
            _, far_train[j] = calculate_val_far(threshold, dist[train], issame[train])
        threshold = far_threshold(far_train, thresholds, far_target)
        val[fold], far[fold] = calculate_val_far(threshold, dist[test], issame[test])
    return val, far


def evaluate_distances_reference(
    dist: np.ndarray, issame: np.ndarray, xnorm: float = 0.0, n_folds: int = N_FOLDS, far_target: float = FAR_TARGET
) -> VerificationResult:
    """Same contract as `faceflow.eval.verification.evaluate_distances`, computed with plain loops."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    acc, thr = calculate_roc(accuracy_thresholds(), dist, issame, n_folds)
    val, far = calculate_val(val_thresholds(), dist, issame, far_target, n_folds)
    return VerificationResult.from_folds(acc, thr, val, far, xnorm, len(dist))


def evaluate_embeddings_reference(
    embeddings: np.ndarray,
    issame: np.ndarray,
    flipped: np.ndarray | None = None,
    n_folds: int = N_FOLDS,
    far_target: float = FAR_TARGET,
) -> VerificationResult:
    """Same contract as `faceflow.eval.verification.evaluate_embeddings`, computed with plain loops."""
    normalized, xnorm = normalized_pair_embeddings(embeddings, flipped)
    return evaluate_distances_reference(pair_distances(normalized), issame, xnorm, n_folds, far_target)
