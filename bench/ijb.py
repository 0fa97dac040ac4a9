"""IJB 1:1 scoring at IJB-C size: 23124 templates (512-d), 15.66M template pairs. Times the Gram-block
scoring `faceflow ijb` uses against the plain batched gather (as arcface_torch scores), checks they agree,
then the ROC and TAR@FAR; prints the peak memory and the ratio last.

    .venv/bin/python bench/ijb.py [--pairs 15658489] [--templates 23124]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
from sklearn.preprocessing import normalize

from faceflow.eval.ijb_verification import pair_scores, verification_result


def benchmark_inputs(templates: int, pairs: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Sparse template ids, their unit features (clustered by subject), random pairs and their labels."""
    rng = np.random.default_rng(seed)
    subjects = rng.integers(0, max(templates // 7, 2), templates)
    centres = rng.normal(size=(int(subjects.max()) + 1, 512))
    features = normalize(centres[subjects] + rng.normal(scale=3.0, size=(templates, 512)))
    unique = np.arange(1, templates + 1) * 3
    first, second = rng.integers(0, templates, pairs), rng.integers(0, templates, pairs)
    labels = (subjects[first] == subjects[second]).astype(np.int8)
    return unique, features, np.stack([unique[first], unique[second]], axis=1), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15_658_489)
    parser.add_argument("--templates", type=int, default=23_124)
    args = parser.parse_args()
    unique, features, pairs, labels = benchmark_inputs(args.templates, args.pairs)
    start = time.perf_counter()
    blocked = pair_scores(unique, features, pairs, blocked=True)
    blocked_s = time.perf_counter() - start
    start = time.perf_counter()
    gathered = pair_scores(unique, features, pairs, blocked=False)
    gathered_s = time.perf_counter() - start
    difference = float(np.max(np.abs(blocked - gathered)))
    start = time.perf_counter()
    result = verification_result(blocked, labels)
    roc_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"{args.pairs} pairs of {args.templates} templates ({result['positive_pairs']} same): Gram blocks "
          f"{blocked_s:.1f} s, batched gather {gathered_s:.1f} s (largest score difference {difference:.1e}); "
          f"ROC + TAR@FAR {roc_s:.1f} s; peak memory {peak:.2f} GiB; TAR@FAR=1e-4 {result['tar_at_far']['1e-4']:.4f}")
    if difference > 1e-9:
        raise SystemExit("the two scoring paths disagree")
    print(f"ratio gather/Gram-block time: {gathered_s / blocked_s:.2f}")


if __name__ == "__main__":
    main()
