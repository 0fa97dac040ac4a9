"""Verification benchmarks (LFW, CFP-FP, AgeDB-30): read a `.bin` or its OFRecord directory, score a model.

`validate_model` (a OneFlow module: validation-while-training) and `validate_with` (any engine: `faceflow
validate`) score models; decoded images are cached per path so repeated validations only re-run the network.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from faceflow.runtime.flow import flow

from faceflow.errors import DataFormatError
from faceflow.eval.embedding import decode_images, embed
from faceflow.eval.verification import VerificationResult, evaluate_embeddings

logger = logging.getLogger(__name__)

# uint8 NCHW images -> (their embeddings, their flips' embeddings), float32 N x D each
EmbedImages = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BenchmarkData:
    """Decoded images (uint8 RGB NCHW, 2N, pairs consecutive) and the N pair flags."""

    path: Path
    images: np.ndarray
    issame: np.ndarray

    @property
    def pairs(self) -> int:
        return len(self.issame)


def read_encoded(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """Encoded images and pair flags of a `.bin` file or of an OFRecord directory converted from one."""
    path = Path(path)
    if path.is_dir():
        from faceflow.data.ofrecord import read_records

        images, flags = [], []
        for index, record in enumerate(read_records(path)):
            if not isinstance(record.get("encoded"), bytes) or "issame" not in record:
                raise DataFormatError(f"{path}: record {index}: expected features 'encoded' (bytes) and 'issame'")
            images.append(record["encoded"])
            flags.append(int(record["issame"]))
        if len(images) % 2:
            raise DataFormatError(f"{path}: odd record count {len(images)} (images come in pairs)")
        flags_arr = np.asarray(flags, dtype=bool)
        mismatch = np.flatnonzero(flags_arr[0::2] != flags_arr[1::2])
        if len(mismatch):
            raise DataFormatError(f"{path}: record {2 * mismatch[0] + 1}: issame differs from record {2 * mismatch[0]}")
        return images, flags_arr[0::2]
    if not path.exists():
        raise DataFormatError(f"{path}: no such benchmark file or OFRecord directory")
    from faceflow.data.verification_bin import read_bin

    return read_bin(path)


_CACHE: dict[tuple[str, int], BenchmarkData] = {}


def load_benchmark(path: str | os.PathLike, use_cache: bool = True) -> BenchmarkData:
    """Decoded benchmark images and flags; cached per (resolved path, mtime)."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.exists() else 0)
    if use_cache and key in _CACHE:
        return _CACHE[key]
    encoded, issame = read_encoded(path)
    if len(issame) == 0:
        raise DataFormatError(f"{path}: no pairs")
    data = BenchmarkData(path=path, images=decode_images(encoded, source=str(path)), issame=issame)
    if use_cache:
        _CACHE[key] = data
    return data


def clear_cache() -> None:
    """Forget decoded benchmarks (frees their memory)."""
    _CACHE.clear()


def evaluate_model(model: flow.nn.Module, data: BenchmarkData, batch_size: int = 64) -> VerificationResult:
    """Embed a benchmark's images and flips with `model` and run the verification protocol."""
    return evaluate_with(lambda images: embed(model, images, batch_size), data)


def evaluate_with(embed_images: EmbedImages, data: BenchmarkData) -> VerificationResult:
    """Run the verification protocol on the embeddings `embed_images` gives a benchmark's images and flips."""
    originals, flips = embed_images(data.images)
    return evaluate_embeddings(originals, data.issame, flips)


def result_lines(name: str, step: int, result: VerificationResult) -> list[str]:
    """The log lines users know: `[lfw][600]XNorm: 22.41`, `Accuracy-Flip: 0.99717+-0.00280`, highest."""
    return [
        f"[{name}][{step}]XNorm: {result.xnorm:.2f}",
        f"[{name}][{step}]Accuracy-Flip: {result.accuracy:.5f}+-{result.accuracy_std:.5f}",
        f"[{name}][{step}]Accuracy-Highest: {result.accuracy_highest:.5f}",
    ]


def validate_model(
    model: flow.nn.Module,
    benchmarks: Mapping[str, str | os.PathLike],
    batch_size: int = 64,
    step: int = 0,
    highest: dict[str, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, VerificationResult]:
    """Score `model` on every named benchmark; print/log the familiar lines.

    `highest` (name -> best accuracy so far) is updated in place and fills `accuracy_highest`,
    so a training loop passes the same dict at every validation. `log` defaults to logging.info.
    """
    return validate_with(lambda images: embed(model, images, batch_size), benchmarks, step, highest, log)


def validate_with(
    embed_images: EmbedImages,
    benchmarks: Mapping[str, str | os.PathLike],
    step: int = 0,
    highest: dict[str, float] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, VerificationResult]:
    """`validate_model` for any engine: `embed_images` maps uint8 NCHW images to (embeddings, flip embeddings),
    such as `faceflow.eval.engine.Embedder.embed`."""
    emit = log or logger.info
    results = {}
    for name, path in benchmarks.items():
        result = evaluate_with(embed_images, load_benchmark(path))
        if highest is not None:
            highest[name] = max(highest.get(name, 0.0), result.accuracy)
            result.accuracy_highest = highest[name]
        for line in result_lines(name, step, result):
            emit(line)
        results[name] = result
    return results
