"""The built-in synthetic face dataset: InsightFace layout (train.rec/.idx/property) plus lfw.bin,
cfp_fp.bin and agedb_30.bin, and IJB-style benchmarks in the released layout under ijb/IJBC and ijb/IJBB
(`synth_ijb.py`), all on identities disjoint from training, byte-identical for a seed.

Identity `i` is drawn from its own random stream (seed, i): training uses ids 0..classes-1, each
benchmark its own pool of ids after them (`verification_pairs` tells which ids each pair holds; `ijb_pool`
which ids an IJB benchmark holds).
"""
from __future__ import annotations

import io
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image, ImageFilter

from faceflow.data.atomic import atomic_dir
from faceflow.data.recordio import write_insightface_dataset
from faceflow.data.synth_ijb import write_benchmark
from faceflow.data.synth_faces import render_faces, sample_identity, sample_nuisance, stack_identities
from faceflow.data.synth_layout import DEFAULT_IDENTITIES, IJB_DIR, check_arguments
from faceflow.data.verification_bin import write_bin
from faceflow.eval.ijb_names import TARGETS
from faceflow.errors import FaceflowError
from faceflow.eval.benchmark_names import BENCHMARKS

DEFAULT_CLASSES = 1000
DEFAULT_PER_CLASS = 12
DEFAULT_PAIRS = 600
DEFAULT_SEED = 0
JPEG_QUALITY = 95
RENDER_RES = 64
BATCH = 128
OUTPUT_FILES = ("train.rec", "train.idx", "property") + tuple(f"{b}.bin" for b in BENCHMARKS)
OUTPUT_NAMES = OUTPUT_FILES + (IJB_DIR,)

_IDENTITY_STREAM, _TRAIN_STREAM, _PAIR_STREAM, _BENCH_STREAM = 1, 2, 3, 4
_Item, _Result = TypeVar("_Item"), TypeVar("_Result")


def default_workers() -> int:
    """Processes to draw with: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def _ordered_map(fn: Callable[[_Item], _Result], items: Iterable[_Item], workers: int) -> Iterator[_Result]:
    """fn over items in order, in `workers` forked processes (batches are independent and seeded by index,
    so the bytes do not depend on the worker count). Fork keeps start-up cheap; workers only run numpy/PIL."""
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context("fork")) as pool:
        yield from pool.map(fn, items)


@dataclass
class SynthSummary:
    """What `generate_dataset` wrote."""

    out_dir: Path
    num_classes: int
    train_images: int
    pairs: int
    ijb_images: dict[str, int]
    seconds: float


def identity_params(seed: int, identity: int) -> dict[str, np.ndarray]:
    """Structural parameters of identity `identity` (independent of how many others exist)."""
    return sample_identity(np.random.default_rng([seed, _IDENTITY_STREAM, identity]))


def benchmark_pool(bench: str, num_classes: int, pairs: int) -> np.ndarray:
    """Identity ids a benchmark draws from: after the training ids, one disjoint block per benchmark."""
    size = max(pairs // 2, 2)
    return num_classes + BENCHMARKS.index(bench) * size + np.arange(size)


def ijb_pool(target: str, num_classes: int, pairs: int, identities: int) -> np.ndarray:
    """Identity ids of an IJB benchmark: after the verification pools, one disjoint block per target."""
    start = num_classes + len(BENCHMARKS) * max(pairs // 2, 2)
    return start + list(TARGETS).index(target) * identities + np.arange(identities)


def verification_pairs(bench: str, num_classes: int, pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity ids (pairs, 2) and issame flags of a benchmark; pairs alternate same / different."""
    pool = benchmark_pool(bench, num_classes, pairs)
    rng = np.random.default_rng([seed, _PAIR_STREAM, BENCHMARKS.index(bench)])
    issame = np.arange(pairs) % 2 == 0
    ids = np.empty((pairs, 2), dtype=np.int64)
    same_ids = rng.permutation(np.resize(pool, int(issame.sum())))
    ids[issame] = same_ids[:, None]
    n_diff = int((~issame).sum())
    first = rng.choice(pool, n_diff)
    offset = rng.integers(1, len(pool), n_diff)
    second = pool[(np.searchsorted(pool, first) + offset) % len(pool)]
    ids[~issame] = np.stack([first, second], axis=1)
    return ids, issame


def _drift(params: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Appearance drift between two sightings of a person (agedb_30): hair length, beard, skin texture."""
    out = dict(params)
    out["hair_long"] = np.float32(rng.uniform(0, 1) * (rng.uniform() < 0.5))
    if rng.uniform() < 0.35:
        out["beard"] = np.float32(0.0 if params["beard"] > 0 else rng.uniform(0.4, 0.8))
    out["tex_amp"] = (params["tex_amp"] * rng.uniform(0.3, 1.8)).astype(np.float32)
    out["skin"] = (params["skin"] * rng.uniform(0.93, 1.05)).astype(np.float32)
    return out


def _encode(images: np.ndarray, blur: np.ndarray) -> list[bytes]:
    """JPEG (quality 95) of each image after its Gaussian blur."""
    out = []
    for image, radius in zip(images, blur):
        pil = Image.fromarray(image)
        if radius > 0:
            pil = pil.filter(ImageFilter.GaussianBlur(float(radius)))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=JPEG_QUALITY)
        out.append(buf.getvalue())
    return out


def _render(params: list[dict[str, np.ndarray]], nuis: dict[str, np.ndarray], rng: np.random.Generator) -> list[bytes]:
    """Draw one batch (one identity dict per image) and encode it."""
    return _encode(render_faces(stack_identities(params), nuis, rng, res=RENDER_RES), nuis["blur"])


def _train_batch(labels: np.ndarray, seed: int, batch: int) -> list[tuple[int, bytes]]:
    """(label, JPEG) of training batch `batch` (BATCH images of the label-sorted list)."""
    chunk = labels[batch * BATCH:(batch + 1) * BATCH].tolist()
    known = {i: identity_params(seed, i) for i in set(chunk)}
    rng = np.random.default_rng([seed, _TRAIN_STREAM, batch])
    nuis = sample_nuisance(rng, len(chunk), profile="mixed", age=(0.0, 0.7))
    return list(zip(chunk, _render([known[i] for i in chunk], nuis, rng)))


def train_records(num_classes: int, per_class: int, seed: int, workers: int = 1) -> Iterator[tuple[int, bytes]]:
    """(label, JPEG) of the training set, sorted by label, rendered in fixed-size batches."""
    labels = np.repeat(np.arange(num_classes), per_class)
    batches = range((len(labels) + BATCH - 1) // BATCH)
    for records in _ordered_map(partial(_train_batch, labels, seed), batches, workers):
        yield from records


def _benchmark_batch(bench: str, ids: np.ndarray, seed: int, batch: int) -> list[bytes]:
    """Encoded images (2 per pair, consecutive) of benchmark batch `batch` (BATCH // 2 pairs)."""
    chunk = ids[batch * (BATCH // 2):(batch + 1) * (BATCH // 2)]
    rng = np.random.default_rng([seed, _BENCH_STREAM, BENCHMARKS.index(bench), batch])
    first = [identity_params(seed, int(i)) for i in chunk[:, 0]]
    second = [identity_params(seed, int(i)) for i in chunk[:, 1]]
    n = len(chunk)
    if bench == "lfw":
        na = sample_nuisance(rng, n, "frontal", age=(0.0, 0.35))
        nb = sample_nuisance(rng, n, "frontal", age=(0.0, 0.35))
    elif bench == "cfp_fp":
        na = sample_nuisance(rng, n, "frontal", age=(0.0, 0.35))
        nb = sample_nuisance(rng, n, "profile", age=(0.0, 0.35))
    else:
        na = sample_nuisance(rng, n, "frontal", age=(0.0, 0.15))
        nb = sample_nuisance(rng, n, "frontal", age=(0.55, 1.0))
        second = [_drift(p, rng) for p in second]
    images: list[bytes] = []
    for a, b in zip(_render(first, na, rng), _render(second, nb, rng)):
        images += [a, b]
    return images


def benchmark_images(bench: str, num_classes: int, pairs: int, seed: int,
                     workers: int = 1) -> tuple[list[bytes], np.ndarray]:
    """Encoded images (2 per pair, consecutive) and issame flags of one benchmark.

    lfw: both images near-frontal; cfp_fp: a near-frontal image against a strong profile;
    agedb_30: the second image is older (grey, receding hair, wrinkles) with drifted appearance.
    """
    ids, issame = verification_pairs(bench, num_classes, pairs, seed)
    batches = range((pairs + BATCH // 2 - 1) // (BATCH // 2))
    images = [image for chunk in _ordered_map(partial(_benchmark_batch, bench, ids, seed), batches, workers)
              for image in chunk]
    return images, issame


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FaceflowError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in OUTPUT_NAMES)
        if foreign:
            raise FaceflowError(f"{out_dir}: not empty and not a synthetic dataset (holds {foreign[0]}); refusing to replace it")


def generate_dataset(
    out_dir: str | Path,
    num_classes: int = DEFAULT_CLASSES,
    per_class: int = DEFAULT_PER_CLASS,
    pairs: int = DEFAULT_PAIRS,
    seed: int = DEFAULT_SEED,
    workers: int | None = None,
    ijb_identities: int = DEFAULT_IDENTITIES,
) -> SynthSummary:
    """Draw the dataset into a temporary directory next to `out_dir`, then rename it into place.

    Batches are drawn in `workers` processes (default: every usable CPU); the bytes are the same for any count.
    `ijb_identities` identities per IJB benchmark (0: none).
    """
    check_arguments(num_classes, per_class, pairs, ijb_identities)
    workers = default_workers() if workers is None else workers
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    started = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        write_insightface_dataset(tmp, train_records(num_classes, per_class, seed, workers), num_classes)
        for bench in BENCHMARKS:
            images, issame = benchmark_images(bench, num_classes, pairs, seed, workers)
            write_bin(tmp / f"{bench}.bin", images, issame)
        ijb_images = {}
        for target in TARGETS if ijb_identities else ():
            ijb_images[target] = write_benchmark(
                tmp / IJB_DIR / target, target, ijb_pool(target, num_classes, pairs, ijb_identities),
                partial(identity_params, seed), seed, partial(_ordered_map, workers=workers))
        os.chmod(tmp, 0o755)
    return SynthSummary(out_dir, num_classes, num_classes * per_class, pairs, ijb_images, time.perf_counter() - started)
