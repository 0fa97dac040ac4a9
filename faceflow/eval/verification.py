"""The InsightFace verification protocol (REFERENCE section 3), vectorised with numpy.

Flip-summed embeddings are L2-normalised; a pair's score is the squared distance; accuracy is
the mean +- std over 10 ordered folds (threshold picked on the other 9 folds from 0..3.99 step
0.01); VAL is the true-accept rate at FAR 1e-3 (thresholds step 0.001, linear interpolation).
`faceflow.eval.verification_reference` holds the plain-loop version the tests and bench compare to.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import interpolate
from sklearn.model_selection import KFold

N_FOLDS = 10
FAR_TARGET = 1e-3


def accuracy_thresholds() -> np.ndarray:
    """Thresholds 0, 0.01, ..., 3.99 searched for the accuracy."""
    return np.arange(0, 4, 0.01)


def val_thresholds() -> np.ndarray:
    """Thresholds 0, 0.001, ..., 3.999 searched for VAL@FAR."""
    return np.arange(0, 4, 0.001)


@dataclass
class VerificationResult:
    """Scores of one benchmark; `threshold` is the mean of the per-fold best thresholds."""

    accuracy: float
    accuracy_std: float
    threshold: float
    xnorm: float
    val: float
    val_std: float
    far: float
    pairs: int
    fold_accuracies: list[float] = field(default_factory=list)
    fold_thresholds: list[float] = field(default_factory=list)
    accuracy_highest: float = 0.0

    @classmethod
    def from_folds(
        cls, acc: np.ndarray, thr: np.ndarray, vals: np.ndarray, fars: np.ndarray, xnorm: float, pairs: int
    ) -> "VerificationResult":
        """Summarise per-fold accuracies, thresholds, VAL and FAR into the reported figures."""
        return cls(
            accuracy=float(np.mean(acc)),
            accuracy_std=float(np.std(acc)),
            threshold=float(np.mean(thr)),
            xnorm=float(xnorm),
            val=float(np.mean(vals)),
            val_std=float(np.std(vals)),
            far=float(np.mean(fars)),
            pairs=int(pairs),
            fold_accuracies=[float(a) for a in acc],
            fold_thresholds=[float(t) for t in thr],
            accuracy_highest=float(np.mean(acc)),
        )

    def to_dict(self) -> dict:
        """Plain JSON-able dict (VAL is also given as `val_at_far`, the name the output files use)."""
        out = asdict(self)
        out["val_at_far"] = out["val"]
        return out


def _float_array(values: np.ndarray) -> np.ndarray:
    """Embeddings as a float array, keeping float32 (InsightFace evaluates in float32)."""
    values = np.asarray(values)
    return values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)


def _row_norms(values: np.ndarray) -> np.ndarray:
    """L2 norm of every row."""
    return np.sqrt(np.einsum("ij,ij->i", values, values))


def normalized_pair_embeddings(
    embeddings: np.ndarray, flipped: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Sum original + flip embeddings, L2-normalise rows; also return XNorm (mean raw-embedding norm)."""
    embeddings = _float_array(embeddings)
    if flipped is None:
        summed, norms = embeddings, _row_norms(embeddings)
        xnorm = float(norms.mean(dtype=np.float64))
    else:
        flipped = _float_array(flipped)
        if flipped.shape != embeddings.shape:
            raise ValueError(f"flipped: shape {flipped.shape} differs from embeddings {embeddings.shape}")
        raw_norms = np.concatenate([_row_norms(embeddings), _row_norms(flipped)])
        xnorm = float(raw_norms.mean(dtype=np.float64))
        summed = embeddings + flipped
        norms = _row_norms(summed)
    tiny = np.finfo(summed.dtype).tiny
    return summed / np.maximum(norms, tiny)[:, None], xnorm


def pair_distances(normalized: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of consecutive rows (0,1), (2,3), ..., returned as float64."""
    if len(normalized) % 2:
        raise ValueError(f"embeddings: expected an even number of rows (pairs), got {len(normalized)}")
    diff = normalized[0::2] - normalized[1::2]
    return np.einsum("ij,ij->i", diff, diff).astype(np.float64)


def fold_ids(n_pairs: int, n_folds: int = N_FOLDS) -> np.ndarray:
    """Fold index of every pair, from sklearn's ordered (unshuffled) KFold."""
    ids = np.empty(n_pairs, dtype=np.int64)
    for fold, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(np.arange(n_pairs))):
        ids[test] = fold
    return ids


def _accepted_counts(dist: np.ndarray, mask: np.ndarray, folds: np.ndarray, n_folds: int, thresholds: np.ndarray) -> np.ndarray:
    """[fold, j] = number of pairs selected by `mask` in the fold with dist < thresholds[j]."""
    first = np.searchsorted(thresholds, dist[mask], side="right")  # threshold index from which dist < t
    hist = np.zeros((n_folds, len(thresholds) + 1), dtype=np.int64)
    np.add.at(hist, (folds[mask], first), 1)
    return np.cumsum(hist, axis=1)[:, : len(thresholds)]


def _fold_accuracies(dist, issame, folds, n_folds, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """Per fold: held-out accuracy at the threshold that is best on the other folds, and that threshold."""
    tp = _accepted_counts(dist, issame, folds, n_folds, thresholds)
    fp = _accepted_counts(dist, ~issame, folds, n_folds, thresholds)
    n_diff = np.bincount(folds[~issame], minlength=n_folds)[:, None]
    correct = tp + (n_diff - fp)
    n_fold = np.bincount(folds, minlength=n_folds)
    best = np.argmax(correct.sum(axis=0)[None, :] - correct, axis=1)  # first maximum, like np.argmax in the loop
    rows = np.arange(n_folds)
    return correct[rows, best] / n_fold, thresholds[best]


def _val_far(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float]:
    """True-accept and false-accept rates at one threshold (0 when a class is absent)."""
    accept = dist < threshold
    n_same, n_diff = int(issame.sum()), int((~issame).sum())
    val = float(np.sum(accept & issame)) / n_same if n_same else 0.0
    far = float(np.sum(accept & ~issame)) / n_diff if n_diff else 0.0
    return val, far


def far_threshold(far_train: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """Threshold where the training FAR (non-decreasing in the threshold) reaches `far_target`, else 0.

    InsightFace interpolates with interp1d(far, thresholds, 'slinear'); SciPy >= 1.10 rejects its
    repeated FAR values (insightface issue #2152). Older SciPy interpolated between the last
    threshold of the FAR step at or below the target and the first threshold of the next step,
    which is what this does, with the same interp1d on those two points.
    """
    if np.max(far_train) < far_target:
        return 0.0
    upper = int(np.searchsorted(far_train, far_target, side="right"))
    if upper == len(far_train):
        return float(thresholds[int(np.searchsorted(far_train, far_target, side="left"))])
    if upper == 0:
        return float(thresholds[0])
    points = [upper - 1, upper]
    return float(interpolate.interp1d(far_train[points], thresholds[points], kind="slinear")(far_target))


def _fold_val(dist, issame, folds, n_folds, thresholds, far_target) -> tuple[np.ndarray, np.ndarray]:
    """Per fold VAL and FAR at the threshold giving `far_target` on the other folds."""
    fp = _accepted_counts(dist, ~issame, folds, n_folds, thresholds)
    n_diff = np.bincount(folds[~issame], minlength=n_folds)
    fp_train, n_diff_train = fp.sum(axis=0)[None, :] - fp, n_diff.sum() - n_diff
    vals, fars = np.zeros(n_folds), np.zeros(n_folds)
    for fold in range(n_folds):
        far_train = fp_train[fold] / n_diff_train[fold] if n_diff_train[fold] else np.zeros(len(thresholds))
        threshold = far_threshold(far_train, thresholds, far_target)
        test = folds == fold
        vals[fold], fars[fold] = _val_far(threshold, dist[test], issame[test])
    return vals, fars


def evaluate_distances(
    dist: np.ndarray, issame: np.ndarray, xnorm: float = 0.0, n_folds: int = N_FOLDS, far_target: float = FAR_TARGET
) -> VerificationResult:
    """The protocol on precomputed squared pair distances."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if len(dist) != len(issame):
        raise ValueError(f"issame: {len(issame)} flags for {len(dist)} pairs")
    if len(dist) < n_folds:
        raise ValueError(f"issame: {len(dist)} pairs, need at least {n_folds} for {n_folds} folds")
    folds = fold_ids(len(dist), n_folds)
    acc, thr = _fold_accuracies(dist, issame, folds, n_folds, accuracy_thresholds())
    vals, fars = _fold_val(dist, issame, folds, n_folds, val_thresholds(), far_target)
    return VerificationResult.from_folds(acc, thr, vals, fars, xnorm, len(dist))


def evaluate_embeddings(
    embeddings: np.ndarray,
    issame: np.ndarray,
    flipped: np.ndarray | None = None,
    n_folds: int = N_FOLDS,
    far_target: float = FAR_TARGET,
) -> VerificationResult:
    """The protocol on raw embeddings (2N rows, pairs consecutive) and, optionally, those of the flips.

    Without `flipped`, `embeddings` is taken as already flip-summed and XNorm is their mean norm.
    """
    normalized, xnorm = normalized_pair_embeddings(embeddings, flipped)
    return evaluate_distances(pair_distances(normalized), issame, xnorm, n_folds, far_target)
