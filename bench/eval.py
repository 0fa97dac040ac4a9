"""Evaluation benchmark: verification protocol (vectorised vs plain loop), flip-embedding throughput
(mbf, r18 on CPU) and onnxruntime vs OneFlow inference throughput. Ratios are printed last.

    .venv/bin/python bench/eval.py [--pairs 6000] [--images 32] [--networks mbf,r18]
"""
from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

import numpy as np
from faceflow.runtime.flow import flow

from faceflow.eval.embedding import embed, normalize_batch
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


def bench_embedding(name: str, images: np.ndarray, batch: int) -> tuple[flow.nn.Module, float]:
    """Images per second through `embed` (each image and its flip) for backbone `name` on CPU."""
    flow.manual_seed(0)
    model = build_backbone(name, embedding_size=512).eval()
    embed(model, images[:4], batch_size=4)  # warm-up (kernel selection, allocator)
    seconds, _ = _best_of(lambda: embed(model, images, batch_size=batch), 1)
    rate = len(images) / seconds
    print(f"embed {name}: {len(images)} images + flips in {seconds:.2f} s = {rate:.1f} images/s "
          f"({2 * rate:.1f} forward images/s)")
    return model, rate


def export_model(model: flow.nn.Module, path: Path, faces: np.ndarray) -> Path:
    """Export through faceflow.export.onnx_export (whose parity check, when it has one, uses `faces`, NHWC)."""
    from faceflow.export.onnx_export import export_onnx

    if "images" in inspect.signature(export_onnx).parameters:
        export_onnx(model, path, images=faces[:4])
    else:
        export_onnx(model, path)
    return path


def bench_onnx(name: str, model: flow.nn.Module, images: np.ndarray, work: Path) -> float:
    """onnxruntime / OneFlow forward throughput on the same normalised batch; returns the ratio."""
    import onnxruntime as ort

    from faceflow.export.onnx_export import INPUT_NAME

    path = export_model(model, work / f"{name}.onnx", images.transpose(0, 2, 3, 1))
    batch = normalize_batch(images)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {INPUT_NAME: batch[:4]})
    ort_s, (ort_out,) = _best_of(lambda: session.run(None, {INPUT_NAME: batch}), 2)
    with flow.no_grad():
        model(flow.tensor(batch[:4]))
        of_s, of_out = _best_of(lambda: model(flow.tensor(batch)).numpy(), 2)
    cos = np.sum(ort_out * of_out, 1) / (np.linalg.norm(ort_out, axis=1) * np.linalg.norm(of_out, axis=1))
    print(f"inference {name} batch {len(batch)}: onnxruntime {len(batch) / ort_s:.1f} images/s, "
          f"OneFlow {len(batch) / of_s:.1f} images/s, min cosine {cos.min():.6f}")
    return of_s / ort_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--images", type=int, default=16, help="images embedded per network (x2 with flips)")
    parser.add_argument("--networks", default="mbf,r18")
    args = parser.parse_args()
    start = time.perf_counter()
    ratios = {"protocol vectorised / plain loop (speed-up)": bench_protocol(args.pairs)}
    images = drawn_faces(args.images).transpose(0, 3, 1, 2).copy()
    with tempfile.TemporaryDirectory(prefix="faceflow-bench-eval-") as work:
        for name in args.networks.split(","):
            model, _ = bench_embedding(name, images, batch=min(32, args.images))
            ratios[f"onnxruntime / OneFlow inference throughput ({name})"] = bench_onnx(name, model, images, Path(work))
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    for label, ratio in ratios.items():
        print(f"RATIO {label}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
