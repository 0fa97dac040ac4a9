"""Evaluation benchmark: verification protocol (vectorised vs plain loop) and CPU validation throughput of
the `auto` engine (onnxruntime on the checkpoint's once-exported ONNX graph) against OneFlow eager, for mbf,
r18 and r50. Ratios are printed last.

Throughput counts images of the benchmark, each embedded with its flip (two forward images). Each engine's
one-off cost (model load; for the CPU path also the ONNX export and its parity check; one warm-up batch) is
measured and spread over an LFW-sized set (--lfw-images 12000); the per-image time is measured on a subset
(--images, and fewer --eager-images for OneFlow, which is slow), the engines alternating in --rounds
rounds so that a change of machine load hits both, and multiplied out to the full set. Each engine's steady
rate is also given in GFLOP/s (Conv and Gemm multiply-accumulates of the exported graph) and as a share of the
cores' FP32 fused multiply-add peak, measured first by bench/fma_peak.c (built with gcc; skipped, with the
reason printed, where it cannot be built or the CPU has no AVX-512).

    .venv/bin/python bench/eval.py [--pairs 6000] [--networks mbf,r18,r50] [--images 64] [--eager-images 16] [--batch 8] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from faceflow.runtime.flow import flow

from faceflow.checkpoint import write_checkpoint
from faceflow.eval.engine import open_embedder
from faceflow.eval.onnx_cache import cache_path
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


def macs_per_image(onnx_path: Path) -> float:
    """Multiply-accumulates of one 112x112 image through the graph's Conv and Gemm nodes (shapes inferred)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.output)}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv":
            macs += float(np.prod(shapes[node.output[0]][1:])) * float(np.prod(weights[node.input[1]][1:]))
        elif node.op_type == "Gemm":
            macs += float(np.prod(weights[node.input[1]]))
    return macs


def fma_peak_gflops(threads: int, work: Path) -> float | None:
    """The cores' FP32 FMA peak on `threads` threads from bench/fma_peak.c, or None (reason printed)."""
    source = Path(__file__).with_name("fma_peak.c")
    if shutil.which("gcc") is None or "avx512f" not in Path("/proc/cpuinfo").read_text():
        print("FMA peak not measured: needs gcc and an AVX-512 CPU")
        return None
    binary = work / "fma_peak"
    built = subprocess.run(["gcc", "-O2", "-mavx512f", "-fopenmp", str(source), "-o", str(binary)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        print(f"FMA peak not measured: gcc failed: {built.stderr.strip().splitlines()[-1:]}")
        return None
    ran = subprocess.run([str(binary)], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    print(ran.stdout.strip())
    return float(re.search(r": ([0-9.]+) GFLOP/s", ran.stdout).group(1))


def _open(ckpt: Path, engine: str, batch: int, threads: int, warm: np.ndarray):
    """An embedder and its one-off cost in seconds: open (model load; for the CPU path the ONNX export and its
    parity check) and one warm-up batch."""
    start = time.perf_counter()
    embedder = open_embedder(ckpt, device="cpu", batch_size=batch, threads=threads, engine=engine, log=lambda _: None)
    embedder.embed(warm)
    return embedder, time.perf_counter() - start


def bench_validation(name: str, faces: np.ndarray, args: argparse.Namespace, work: Path,
                     peak: float | None) -> float:
    """Validation throughput of the CPU path (engine auto: onnxruntime on the cached export) against OneFlow
    eager for backbone `name`, each amortised over `--lfw-images`; returns the ratio. The two engines are timed
    in alternating rounds, so a machine whose load changes slows both alike."""
    ckpt = _checkpoint(name, work)
    print(f"validation {name} on CPU, {args.threads} threads, batch {args.batch} (+ flips), "
          f"{args.rounds} alternating rounds:")
    fast_faces, eager_faces = faces[:args.images], faces[:args.eager_images]
    share = {"onnxruntime": len(fast_faces) // args.rounds, "oneflow": len(eager_faces) // args.rounds}
    fast, fast_setup = _open(ckpt, "auto", args.batch, args.threads, faces[:2])
    eager, eager_setup = _open(ckpt, "oneflow", args.batch, args.threads, faces[:2])
    spent = {fast.engine: 0.0, eager.engine: 0.0}
    outputs: dict[str, list[np.ndarray]] = {fast.engine: [], eager.engine: []}
    for round_ in range(args.rounds):
        for embedder, images in ((fast, fast_faces), (eager, eager_faces)):
            size = share[embedder.engine]
            start = time.perf_counter()
            originals, _ = embedder.embed(images[round_ * size:(round_ + 1) * size])
            spent[embedder.engine] += time.perf_counter() - start
            outputs[embedder.engine].append(originals)
    rates = {}
    flops = 2 * 2 * macs_per_image(cache_path(ckpt))  # an image and its flip, two FLOPs per multiply-accumulate
    for embedder, setup in ((fast, fast_setup), (eager, eager_setup)):
        count = share[embedder.engine]
        per_image = spent[embedder.engine] / (count * args.rounds)
        rates[embedder.engine] = args.lfw_images / (setup + args.lfw_images * per_image)
        gflops = flops / per_image / 1e9
        share_of_peak = f", {100 * gflops / peak:.0f}% of peak" if peak else ""
        print(f"  {embedder.engine:11s} one-off {setup:6.1f} s, steady {1 / per_image:6.2f} images/s on "
              f"{count * args.rounds} images ({gflops:5.1f} GFLOP/s{share_of_peak}) -> {rates[embedder.engine]:6.2f} "
              f"images/s over {args.lfw_images} images ({args.lfw_images / rates[embedder.engine] / 60:.0f} min)")
    b = np.concatenate(outputs[eager.engine]).astype(np.float64)
    same = np.concatenate(outputs[fast.engine])[:len(b)].astype(np.float64)  # both ran faces in order
    cosine = np.sum(same * b, 1) / (np.linalg.norm(same, axis=1) * np.linalg.norm(b, axis=1))
    print(f"  min cosine onnxruntime vs OneFlow on {len(b)} images: {cosine.min():.6f}")
    return rates[fast.engine] / rates[eager.engine]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6000)
    parser.add_argument("--networks", default="mbf,r18,r50")
    parser.add_argument("--images", type=int, default=64, help="images timed on the CPU path (x2 with flips)")
    parser.add_argument("--eager-images", type=int, default=16, help="images timed in OneFlow eager (x2 with flips)")
    parser.add_argument("--lfw-images", type=int, default=12000, help="set size the one-off costs are spread over")
    parser.add_argument("--batch", type=int, default=8, help="images per forward pass of both engines (x2 with flips)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating timing rounds (each: images / rounds)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of either engine")
    args = parser.parse_args()
    start = time.perf_counter()
    ratios = {"protocol vectorised / plain loop (speed-up)": bench_protocol(args.pairs)}
    faces = drawn_faces(max(args.images, args.eager_images)).transpose(0, 3, 1, 2).copy()
    with tempfile.TemporaryDirectory(prefix="faceflow-bench-eval-") as work:
        peak = fma_peak_gflops(args.threads, Path(work))
        for name in args.networks.split(","):
            ratios[f"CPU validation, auto engine / OneFlow eager, amortised over {args.lfw_images} images ({name})"] = (
                bench_validation(name, faces, args, Path(work), peak))
    print(f"total bench time {time.perf_counter() - start:.0f} s")
    for label, ratio in ratios.items():
        print(f"RATIO {label}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
