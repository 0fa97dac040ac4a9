"""Convert MXNet RecordIO datasets and verification `.bin` files to OFRecord part directories.

One pass converts, optionally shuffles (seeded) and splits into N parts; the output directory
appears only when complete. Bad input stops with a one-line error naming file and key/offset.
"""
from __future__ import annotations

import contextlib
import gc
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from faceflow.data.image_bytes import JPEG_EOI, JPEG_SOI, image_problem, image_size_of_bytes
from faceflow.data.image_verify import ImageChecker
from faceflow.data.ofrecord import META_NAME, FramedRecordEncoder, PartsWriter, part_name
from faceflow.data.recordio import ImageChunk, RecordDataset
from faceflow.data.train_parts import PartScan, store_scan
from faceflow.data.verification_bin import read_bin
from faceflow.errors import DataFormatError, FaceflowError

_SOI, _EOI = np.frombuffer(JPEG_SOI, np.uint8), np.frombuffer(JPEG_EOI, np.uint8)


@dataclass
class ConvertSummary:
    """What a conversion wrote and how fast."""

    records: int
    classes: int
    bytes: int
    seconds: float
    parts: int
    skipped: int = 0
    pairs: int = 0

    def line(self) -> str:
        """The closing summary line printed by `faceflow convert`."""
        mbps = self.bytes / 1e6 / max(self.seconds, 1e-9)
        skipped = f", {self.skipped} bad skipped" if self.skipped else ""
        what = f"{self.pairs} pairs" if self.pairs else f"{self.classes} classes"
        return (f"{self.records} records, {what}, {self.bytes} bytes in {self.parts} parts, "
                f"{self.seconds:.2f} s, {mbps:.1f} MB/s{skipped}")


def _check_parts(num_parts: int) -> None:
    if num_parts < 1:
        raise FaceflowError(f"--parts: must be at least 1, got {num_parts}")


def _write_meta(out_dir: Path, summary: ConvertSummary, source: Path, kind: str,
                image_size: tuple[int, int] | None, images_decoded: bool = False) -> None:
    meta = {"kind": kind, "source": str(source), "image_size": image_size, "images_decoded": images_decoded,
            **asdict(summary)}
    path = out_dir / META_NAME
    try:
        path.write_text(json.dumps(meta, indent=1) + "\n")
    except OSError as err:  # a full disk: atomic_dir turns it into one line, naming this file
        err.filename = err.filename or str(path)
        raise


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Suspend the cyclic garbage collector: conversion creates two views per record (no cycles), and
    the collections they would trigger cost about a tenth of the conversion (bench/convert.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _image_size(image: bytes, where: str) -> tuple[int, int]:
    """(height, width) from an image's header, or a one-line error naming where the image is."""
    try:
        return image_size_of_bytes(image)
    except Exception as err:  # PIL raises several types for headers it cannot read
        raise DataFormatError(f"{where}: cannot read the image size ({type(err).__name__})") from None


def _first_image_size(dataset: RecordDataset) -> tuple[int, int] | None:
    for _, _, image in dataset.labelled_images(dataset.image_keys[:1]):
        try:
            return image_size_of_bytes(image)
        except Exception:  # PIL raises several types; the record's own check reports it
            return None
    return None


def _check_chunk(dataset: RecordDataset, chunk: ImageChunk, limit: int, class_source: str, skip_bad: bool
                 ) -> tuple[list[bytes | memoryview], np.ndarray, np.ndarray, int, np.ndarray]:
    """(images, lengths, int labels, skipped, keys) of a chunk's kept records: vectorised checks, the exact
    per-record path (and its one-line errors) only for the records those checks do not pass."""
    labels = np.trunc(chunk.labels)
    starts, ends, data = chunk.starts, chunk.ends, chunk.array
    lengths = ends - starts
    fine = chunk.regular & (labels >= 0) & (labels < limit) & (lengths >= 5)
    at = np.where(fine, starts, 0)[:, None] + np.arange(3)
    to = np.where(fine, ends, 2)[:, None] - np.arange(2, 0, -1)
    fine &= (data[at] == _SOI).all(1) & (data[to] == _EOI).all(1)
    view = chunk.buffer
    images: list[bytes | memoryview] = [view[a:b] for a, b in zip(starts.tolist(), ends.tolist())]
    values = np.where(fine, labels, 0).astype(np.int64)
    keep = np.ones(len(images), bool)
    for i in np.flatnonzero(~fine).tolist():
        key = int(chunk.keys[i])
        where = f"{dataset.rec_path}: key {key}"
        if chunk.regular[i]:
            raw, image = float(chunk.labels[i]), images[i]
        else:
            header, image = dataset.read(key)
            raw = float(header.label[0]) if header.flag > 0 else float(header.label)
        if not np.isfinite(raw):
            raise DataFormatError(f"{where}: label {raw} is not a number")
        label = int(raw)
        if not 0 <= label < limit:
            limit_text = limit if limit < 1 << 31 else "2^31"
            raise DataFormatError(f"{where}: label {label} outside [0, {limit_text}) (class count from {class_source})")
        if image[:3] != JPEG_SOI or image[-2:] != JPEG_EOI:
            problem = image_problem(bytes(image))  # the full check: other formats, padded JPEGs
            if problem is not None:
                if not skip_bad:
                    raise DataFormatError(f"{where} at byte offset {dataset.index[key]}: {problem} "
                                          f"(--skip-bad skips such records)")
                keep[i] = False
                continue
        images[i], lengths[i], values[i] = image, len(image), label
    skipped = len(keep) - int(keep.sum())
    keys = chunk.keys
    if skipped:
        images = [image for image, k in zip(images, keep.tolist()) if k]
        lengths, values, keys = lengths[keep], values[keep], keys[keep]
    return images, lengths, values, skipped, keys


def _verify_chunk(dataset: RecordDataset, checker: ImageChecker, crop: tuple[int, int], skip_bad: bool,
                  images: list[bytes | memoryview], lengths: np.ndarray, values: np.ndarray, keys: np.ndarray
                  ) -> tuple[list[bytes | memoryview], np.ndarray, np.ndarray, int]:
    """The chunk without the images OneFlow's training decoder could not read (every image decoded, in
    parallel): (images, lengths, labels, skipped); without --skip-bad the first such image is an error."""
    problems = checker.problems(images, crop)
    bad = [i for i, problem in enumerate(problems) if problem is not None]
    if not bad:
        return images, lengths, values, 0
    if not skip_bad:
        key = int(keys[bad[0]])
        raise DataFormatError(f"{dataset.rec_path}: key {key} at byte offset {dataset.index[key]}: "
                              f"{problems[bad[0]]} (--skip-bad skips such records)")
    keep = np.ones(len(images), bool)
    keep[bad] = False
    return [image for image, k in zip(images, keep.tolist()) if k], lengths[keep], values[keep], len(bad)


def _record_verified_parts(out_dir: Path, records: int, label_max: np.ndarray, crop: tuple[int, int]) -> None:
    """Cache the verification of the parts just written (records went round-robin), so training does not
    decode them again (faceflow.data.train_parts)."""
    parts = len(label_max)
    for i in range(parts):
        count = (records - i + parts - 1) // parts
        store_scan(out_dir / part_name(i), crop, PartScan(count, int(label_max[i])))


def convert_rec(data_dir: str | Path, out_dir: str | Path, num_parts: int, *, shuffle: bool = False,
                seed: int = 0, skip_bad: bool = False, verify: bool = True, progress: bool = True) -> ConvertSummary:
    """Convert `DATA_DIR/train.{rec,idx}` (+ property) to `num_parts` OFRecord training parts.

    Records are checked and framed a chunk at a time with numpy over a memory map of `train.rec`, and
    written with `writev` straight from the map by a background thread while the next chunk is framed;
    the output is byte-identical to per-record protobuf serialization. With `verify` (the default) every
    image is decoded as OneFlow's training decoder would (in parallel over the usable CPUs); without it
    only the framing and JPEG markers are checked.
    """
    _check_parts(num_parts)
    start = time.perf_counter()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    with RecordDataset(data_dir) as dataset:
        num_classes = dataset.num_classes
        keys = np.asarray(dataset.image_keys, np.int64)
        if shuffle:
            keys = keys[np.random.default_rng(seed).permutation(len(keys))]
        labels_seen: set[int] = set()
        skipped = 0
        limit = num_classes if num_classes is not None else 1 << 31
        class_source = dataset.data_dir / "property" if dataset.property else "the header's identity records"
        encoder = FramedRecordEncoder("encoded", "label")
        image_size = dataset.property[1:] if dataset.property else _first_image_size(dataset)
        crop = tuple(image_size) if image_size else (0, 0)
        label_max = np.full(num_parts, -1, np.int64)
        bar = tqdm(total=len(keys), unit="img", desc=f"convert {data_dir.name}", disable=not progress,
                   mininterval=0.5)
        with bar, _gc_paused(), ImageChecker(None if verify else 1) as checker, \
                PartsWriter(out_dir, num_parts) as writer:
            for chunk in dataset.image_chunks(keys):
                images, lengths, values, bad, kept = _check_chunk(dataset, chunk, limit, class_source, skip_bad)
                if verify:
                    images, lengths, values, unreadable = _verify_chunk(dataset, checker, crop, skip_bad, images,
                                                                        lengths, values, kept)
                    bad += unreadable
                skipped += bad
                if num_classes is None:
                    labels_seen.update(np.unique(values).tolist())
                np.maximum.at(label_max, (writer.records + np.arange(len(values))) % num_parts, values)
                writer.write_batch(encoder, images, lengths, values)  # views of the map: written in the background
                del images, chunk
                bar.update(len(lengths) + bad)
            summary = ConvertSummary(writer.records, num_classes or len(labels_seen), writer.bytes,
                                     time.perf_counter() - start, num_parts, skipped)
            _write_meta(writer.tmp_dir, summary, data_dir, "train", image_size, verify)
    if verify:
        _record_verified_parts(out_dir, summary.records, label_max, crop)
    summary.seconds = time.perf_counter() - start
    return summary


def convert_bin(bin_file: str | Path, out_dir: str | Path, *, progress: bool = True) -> ConvertSummary:
    """Convert a verification `.bin` to one OFRecord part of `encoded` + `issame` records, in order."""
    start = time.perf_counter()
    bin_file, out_dir = Path(bin_file), Path(out_dir)
    images, issame = read_bin(bin_file)
    bar = tqdm(total=len(images), unit="img", desc=f"convert {bin_file.name}", disable=not progress,
               mininterval=0.5)
    encoder = FramedRecordEncoder("encoded", "issame")
    with bar, PartsWriter(out_dir, 1) as writer:
        for i, image in enumerate(images):
            problem = image_problem(image)
            if problem is not None:
                raise DataFormatError(f"{bin_file}: image {i} (pair {i // 2}): {problem}")
            writer.write_pieces(encoder.encode(image, int(issame[i // 2])))
            bar.update(1)
        writer.flush()
        summary = ConvertSummary(writer.records, 2, writer.bytes, time.perf_counter() - start, 1,
                                 pairs=len(issame))
        image_size = _image_size(images[0], f"{bin_file}: image 0") if images else None
        _write_meta(writer.tmp_dir, summary, bin_file, "verification", image_size)
    summary.seconds = time.perf_counter() - start
    return summary
