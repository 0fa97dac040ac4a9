"""The vectorised verification protocol against the plain-loop reference and known cases."""
from __future__ import annotations


import numpy as np
import pytest

from faceflow.eval.verification import (
    accuracy_thresholds,
    evaluate_distances,
    evaluate_embeddings,
    fold_ids,
    val_thresholds,
)
from faceflow.eval.verification_reference import evaluate_distances_reference, evaluate_embeddings_reference


def _pairs(rng: np.random.Generator, n_pairs: int, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings (2N rows, consecutive pairs), flip embeddings and issame with identity structure."""
    issame = rng.random(n_pairs) < 0.5
    anchor = rng.normal(size=(n_pairs, dim))
    other = np.where(issame[:, None], anchor, rng.normal(size=(n_pairs, dim)))
    emb = np.empty((2 * n_pairs, dim), dtype=np.float32)
    emb[0::2] = anchor + noise * rng.normal(size=anchor.shape)
    emb[1::2] = other + noise * rng.normal(size=other.shape)
    flip = (emb + 0.3 * rng.normal(size=emb.shape)).astype(np.float32)
    return emb, flip, issame


def _assert_same(fast, slow) -> None:
    assert fast.fold_accuracies == slow.fold_accuracies
    assert fast.fold_thresholds == slow.fold_thresholds
    assert fast.accuracy == slow.accuracy and fast.accuracy_std == slow.accuracy_std
    assert fast.threshold == slow.threshold
    assert fast.val == pytest.approx(slow.val, abs=1e-12) and fast.far == pytest.approx(slow.far, abs=1e-12)
    assert fast.val_std == pytest.approx(slow.val_std, abs=1e-12)
    assert fast.xnorm == slow.xnorm and fast.pairs == slow.pairs


@pytest.mark.parametrize("noise", [0.6, 1.0, 1.6])
def test_vectorised_matches_loop_on_structured_embeddings(noise: float) -> None:
    emb, flip, issame = _pairs(np.random.default_rng(1), 600, 32, noise)
    fast, slow = evaluate_embeddings(emb, issame, flip), evaluate_embeddings_reference(emb, issame, flip)
    _assert_same(fast, slow)
    assert 0.5 < fast.accuracy <= 1.0 and 0.0 <= fast.val <= 1.0


def test_vectorised_matches_loop_on_random_embeddings() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(2 * 503, 16)).astype(np.float32)
    issame = rng.random(503) < 0.5
    _assert_same(evaluate_embeddings(emb, issame), evaluate_embeddings_reference(emb, issame))


def test_vectorised_matches_loop_when_distances_sit_on_thresholds() -> None:
    """Distances equal to grid thresholds exercise `dist < t` (strict) in both implementations."""
    rng = np.random.default_rng(3)
    n = 997
    issame = rng.random(n) < 0.5
    grid = accuracy_thresholds()
    dist = np.where(issame, grid[rng.integers(20, 140, n)], grid[rng.integers(100, 300, n)])
    dist[:50] = val_thresholds()[rng.integers(0, 4000, 50)]
    _assert_same(evaluate_distances(dist, issame), evaluate_distances_reference(dist, issame))


def test_perfect_separation_gives_one() -> None:
    """Same pairs at distance ~0, different pairs spread over [1, 3]: accuracy and VAL are 1."""
    rng = np.random.default_rng(4)
    n = 4000
    issame = rng.random(n) < 0.5
    angle = np.arccos(rng.uniform(-0.5, 0.5, n))
    emb = np.zeros((2 * n, 2))
    emb[0::2, 0] = rng.uniform(1, 3, n)
    emb[1::2] = np.where(issame[:, None], [[1.0, 0.0]], np.stack([np.cos(angle), np.sin(angle)], axis=1))
    result = evaluate_embeddings(emb, issame)
    assert result.accuracy == 1.0 and result.accuracy_std == 0.0
    assert result.fold_accuracies == [1.0] * 10
    assert 0.0 < result.threshold <= 1.0
    assert result.val == 1.0 and result.far < 0.005


def test_random_embeddings_are_near_chance() -> None:
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(2 * 6000, 64))
    issame = rng.random(6000) < 0.5
    result = evaluate_embeddings(emb, issame, rng.normal(size=emb.shape))
    assert abs(result.accuracy - 0.5) < 0.03
    assert result.val < 0.02


@pytest.mark.parametrize("n_pairs", [10, 37, 1003])
def test_folds_follow_ordered_kfold_when_not_divisible(n_pairs: int) -> None:
    ids = fold_ids(n_pairs)
    sizes = np.bincount(ids, minlength=10)
    assert sizes.sum() == n_pairs and sizes.max() - sizes.min() <= 1
    assert np.all(np.diff(ids) >= 0)  # ordered: fold k holds a contiguous block
    assert list(sizes) == sorted(sizes, reverse=True)  # the first n % 10 folds take one extra pair
    emb, flip, issame = _pairs(np.random.default_rng(n_pairs), n_pairs, 8, 1.0)
    _assert_same(evaluate_embeddings(emb, issame, flip), evaluate_embeddings_reference(emb, issame, flip))


def test_xnorm_is_mean_raw_norm_of_originals_and_flips() -> None:
    emb = np.array([[3.0, 4.0], [0.0, 1.0]] * 10)
    flip = np.array([[6.0, 8.0], [0.0, 3.0]] * 10)
    assert evaluate_embeddings(emb, np.ones(10, bool) & (np.arange(10) % 2 == 0), flip).xnorm == pytest.approx(
        (5 + 1 + 10 + 3) / 4)
    assert evaluate_embeddings(emb, np.arange(10) % 2 == 0).xnorm == pytest.approx(3.0)


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="even number"):
        evaluate_embeddings(np.ones((21, 4)), np.ones(10, bool))
    with pytest.raises(ValueError, match="flags"):
        evaluate_embeddings(np.ones((20, 4)), np.ones(9, bool))
    with pytest.raises(ValueError, match="at least 10"):
        evaluate_embeddings(np.ones((10, 4)), np.ones(5, bool))


def test_result_dict_names_val_at_far() -> None:
    emb, flip, issame = _pairs(np.random.default_rng(6), 100, 8, 1.0)
    out = evaluate_embeddings(emb, issame, flip).to_dict()
    assert out["val_at_far"] == out["val"] and len(out["fold_accuracies"]) == 10
