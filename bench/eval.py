"""Evaluation benchmark: verification protocol (vectorised vs plain loop) and CPU validation throughput of
the `auto` engine (onnxruntime on the checkpoint's once-exported ONNX graph) against OneFlow eager, for mbf,
r18 and r50. Ratios are printed last.

Throughput counts images of the benchmark, each embedded with its flip (two forward images). Each engine's
one-off cost (model load; for the CPU path also the ONNX export and its parity check; one warm-up batch) is
measured and spread over an LFW-sized set (--lfw-images 12000); the per-image time is measured on a subset
(--images, and fewer --eager-images for OneFlow, which is slow) and multiplied out to the full set.

    .venv/bin/python bench/eval.py [--pairs 6000] [--networks mbf,r18,r50] [--images 64] [--eager-images 8]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from faceflow.runtime.flow import flow

from faceflow.checkpoint import write_checkpoint
from faceflow.eval.engine import open_embedder
from faceflow.eval.verification import evaluate_embeddings
from faceflow.eval.verification_reference import evaluate_embeddings_reference
from faceflow.export.parity import drawn_faces
from faceflow.models import build_backbone


def _best_of(fn, repeats: int) -> tuple[float, object]:
    """Fastest wall time of `repeats` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def protocol_embeddings(pairs: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LFW-sized float32 embeddings with identity structure (accuracy well above chance, below 1)."""
    rng = np.random.default_rng(seed)
    issame = np.arange(pairs) % 2 == 0
    anchor = rng.normal(size=(pairs, dim)).astype(np.float32)
    other = np.where(issame[:, None], anchor, rng.normal(size=(pairs, dim)).astype(np.float32))
    emb = np.empty((2 * pairs, dim), dtype=np.float32)
    emb[0::2] = anchor + rng.normal(size=anchor.shape).astype(np.float32) * 3.0
    emb[1::2] = other + rng.normal(size=other.shape).astype(np.float32) * 3.0
    flips = emb + rng.normal(size=emb.shape).astype(np.float32) * 0.3
    return emb, flips, issame


def bench_protocol(pairs: int) -> float:
    """Time both implementations on the same embeddings; check they agree; return the speed-up."""
    emb, flips, issame = protocol_embeddings(pairs)
    fast_s, fast = _best_of(lambda: evaluate_embeddings(emb, issame, flips), 5)
    loop_s, loop = _best_of(lambda: evaluate_embeddings_reference(emb, issame, flips), 1)
    same = (fast.fold_accuracies == loop.fold_accuracies and fast.threshold == loop.threshold
            and abs(fast.val - loop.val) < 1e-12 and fast.xnorm == loop.xnorm)
    print(f"protocol {pairs} pairs: vectorised {fast_s * 1e3:.1f} ms, plain loop {loop_s * 1e3:.0f} ms, "
          f"same numbers: {same} (accuracy {fast.accuracy:.5f}+-{fast.accuracy_std:.5f}, "
          f"threshold {fast.threshold:.3f}, VAL {fast.val:.5f} @ FAR {fast.far:.5f})")
    if not same:
        raise SystemExit("vectorised protocol disagrees with the plain loop")
    return loop_s / fast_s


def _checkpoint(name: str, root: Path) -> Path:
    """A seeded, randomly initialised 512-d checkpoint of backbone `name` (throughput does not depend on weights)."""
    flow.manual_seed(0)
    model = build_backbone(name, embedding_size=512)
    return write_checkpoint(root / name, 1, {"network": name, "embedding_size": 512}, {"epoch": 0},
                            lambda d: flow.save(model.state_dict(), str(d / "backbone")))


def timed_validation(ckpt: Path, engine: str, images: np.ndarray, batch: int, threads: int,
                     lfw_images: int) -> tuple[float, np.ndarray]:
    """Amortised images/s of one engine (each image and its flip): the one-off cost (open: model load, and for
    the CPU path the ONNX export and its parity check; one warm-up batch) plus `lfw_images` times the
    per-image time measured on `images`, spread over `lfw_images`. Returns it and the embeddings."""
    start = time.perf_counter()
    embedder = open_embedder(ckpt, device="cpu", batch_size=batch, threads=threads, engine=engine, log=lambda _: None)
    embedder.embed(images[:2])
    setup = time.perf_counter() - start
    start = time.perf_counter()
    originals, _ = embedder.embed(images)
    per_image = (time.perf_counter() - start) / len(images)
    rate = lfw_images / (setup + lfw_images * per_image)
    print(f"  {embedder.engine:11s} one-off {setup:6.1f} s, steady {1 / per_image:6.1f} images/s on {len(images)} "
          f"images -> {rate:6.1f} images/s over {lfw_images} images ({lfw_images / rate / 60:.1f} min)")
    return rate, originals


def bench_validation(name: str, faces: np.ndarray, args: argparse.Namespace, work: Path) -> float:
    """Validation throughput of the CPU path (engine auto: onnxruntime on the cached export) against OneFlow
    eager for backbone `name`; returns the ratio."""
    ckpt = _checkpoint(name, work)
    print(f"validation {name} on CPU, {args.threads} threads, batch {args.batch} (+ flips):")
    fast, fast_out = timed_validation(ckpt, "auto", faces[:args.images], args.batch, args.threads, args.lfw_images)
    eager_faces = faces[:args.eager_images]
    eager, eager_out = timed_validation(ckpt, "oneflow", eager_faces, min(args.batch, len(eager_faces)),
                                        args.threads, args.lfw_images)
    a, b = fast_out[:len(eager_out)].astype(np.float64), eager_out.astype(np.float64)
    cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"  min cosine onnxruntime vs OneFlow on {len(b)} images: {cosine.min():.6f}")
    return fast / eager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--networks", default="mbf,r18,r50")
    parser.add_argument("--images", type=int, default=64, help="images timed on the CPU path (x2 with flips)")
    parser.add_argument("--eager-images", type=int, default=8, help="images timed in OneFlow eager (x2 with flips)")
    parser.add_argument("--lfw-images", type=int, default=12000, help="set size the one-off costs are spread over")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass (x2 with flips)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of either engine")
    args = parser.parse_args()
    start = time.perf_counter()
    ratios = {"protocol vectorised / plain loop (speed-up)": bench_protocol(args.pairs)}
    faces = drawn_faces(max(args.images, args.eager_images)).transpose(0, 3, 1, 2).copy()
    with tempfile.TemporaryDirectory(prefix="faceflow-bench-eval-") as work:
        for name in args.networks.split(","):
            ratios[f"CPU validation, auto engine / OneFlow eager, amortised over {args.lfw_images} images ({name})"] = (
                bench_validation(name, faces, args, Path(work)))
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    for label, ratio in ratios.items():
        print(f"RATIO {label}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
