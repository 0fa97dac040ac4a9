"""Benchmark: `convert rec` vs a plain copy of the same .rec bytes, and the OneFlow training input
pipeline vs MXNet's ImageRecordIter (same data, same thread count). Ratios are printed last.

Convert ratio = MB/s of `convert_rec` (read train.rec + idx + property, check every record, write
OFRecord parts atomically) / MB/s of `shutil.copyfile(train.rec)` (the kernel reads and writes the
same bytes with sendfile, no per-record work), both over train.rec's size, runs alternating in one
process, best of --repeats each.

Usage: python bench/convert.py [--images 3000] [--threads 2] [--batch 64] [--batches 30] [--parts 8]
The headline convert ratio is 1 part (one file in, one file out, like the copy); N parts is also shown.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import faceflow  # noqa: F401  (loads the libraries oneflow needs, before any data module)

from faceflow.data.convert import convert_rec
from faceflow.data.pipeline import TrainPipeline
from faceflow.data.recordio import IRHeader, RecordDataset, RecordWriter, pack_payload, write_insightface_dataset


def make_images(n: int, classes: int, seed: int = 0) -> list[tuple[int, bytes]]:
    """n random 112x112 JPEGs (q95) of smooth noise, face-image sized (a few KB each), sorted by label."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((112, 112), Image.BICUBIC).save(buf, "JPEG", quality=95)
        out.append((i * classes // n, buf.getvalue()))
    return out


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_convert(data_dir: Path, work: Path, repeats: int, parts: tuple[int, ...]) -> tuple[float, dict[int, float]]:
    """(copy MB/s, {parts: convert MB/s}) over the bytes of train.rec: runs alternate, each to a fresh
    path, outputs deleted outside the timed region; best run of each kept (the machine is shared)."""
    rec = data_dir / "train.rec"
    size_mb = rec.stat().st_size / 1e6
    copy_times: list[float] = []
    convert_times: dict[int, list[float]] = {n: [] for n in parts}
    for _ in range(repeats):
        start = time.perf_counter()
        shutil.copyfile(rec, work / "copy.rec")
        copy_times.append(time.perf_counter() - start)
        (work / "copy.rec").unlink()
        for n in parts:
            start = time.perf_counter()
            convert_rec(data_dir, work / "of", n, progress=False)
            convert_times[n].append(time.perf_counter() - start)
            shutil.rmtree(work / "of")
    return size_mb / min(copy_times), {n: size_mb / min(t) for n, t in convert_times.items()}


def bench_readers(data_dir: Path, repeats: int) -> tuple[float, float]:
    """(mxnet.recordio records/s, faceflow RecordDataset records/s) reading every image record."""
    import mxnet as mx

    def with_mxnet() -> None:
        reader = mx.recordio.MXIndexedRecordIO(str(data_dir / "train.idx"), str(data_dir / "train.rec"), "r")
        header, _ = mx.recordio.unpack(reader.read_idx(0))
        for key in range(1, int(header.label[0])):
            mx.recordio.unpack(reader.read_idx(key))
        reader.close()

    def with_faceflow() -> None:
        with RecordDataset(data_dir) as dataset:
            for _ in dataset:
                pass

    n = len(RecordDataset(data_dir).image_keys)
    return n / best_of(repeats, with_mxnet), n / best_of(repeats, with_faceflow)


def write_im2rec_copy(records: list[tuple[int, bytes]], out_dir: Path) -> None:
    """The same images in im2rec layout (ImageRecordIter cannot skip InsightFace's header records)."""
    with RecordWriter(out_dir / "train.rec", out_dir / "train.idx") as writer:
        for key, (label, image) in enumerate(records):
            writer.write(key, pack_payload(IRHeader(0, float(label), key, 0), image))


def bench_pipelines(im2rec_dir: Path, of_dir: Path, threads: int, batch: int, batches: int,
                    rounds: int) -> tuple[float, float]:
    """(mx.io.ImageRecordIter images/s, TrainPipeline images/s): decode, mirror, normalize, NCHW float32.

    Each run builds its pipeline inside the timed region and drops it afterwards, so neither side
    decodes in the background while the other is measured. Both keep one batch in flight.
    """
    import mxnet as mx

    def mx_run() -> None:
        it = mx.io.ImageRecordIter(path_imgrec=str(im2rec_dir / "train.rec"), path_imgidx=str(im2rec_dir / "train.idx"),
                                   data_shape=(3, 112, 112), batch_size=batch, shuffle=True, rand_mirror=True,
                                   mean_r=127.5, mean_g=127.5, mean_b=127.5, std_r=127.5, std_g=127.5, std_b=127.5,
                                   preprocess_threads=threads, prefetch_buffer=1, round_batch=True)
        done = 0
        while done < batches:
            try:
                b = it.next()
            except StopIteration:
                it.reset()
                continue
            b.data[0].asnumpy()
            b.label[0].asnumpy()
            done += 1
        del it

    def of_run() -> None:
        pipeline = TrainPipeline(of_dir, batch, shuffle=True, num_threads=threads)
        images, labels = pipeline()
        for _ in range(batches - 1):
            next_images, next_labels = pipeline()  # queued: OneFlow's eager ops run asynchronously
            images.numpy()
            labels.numpy()
            images, labels = next_images, next_labels
        images.numpy()
        labels.numpy()

    mx_times, of_times = [], []
    for _ in range(rounds):  # alternate, keep each side's best (the machine is shared)
        mx_times.append(best_of(1, mx_run))
        of_times.append(best_of(1, of_run))
    return batch * batches / min(mx_times), batch * batches / min(of_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2, help="decode threads (capped at cores - 1, as MXNet does)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=15,
                        help="alternating copy/convert runs, best of each kept (the machine is shared)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating pipeline rounds (best kept)")
    parser.add_argument("--parts", type=int, default=8, help="parts of the second convert measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceflow-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        records = make_images(args.images, args.classes)
        write_insightface_dataset(work / "rec", records, args.classes)
        write_im2rec_copy(records, work / "im2rec")
        rec_mb = (work / "rec" / "train.rec").stat().st_size / 1e6
        print(f"data: {args.images} images, {args.classes} classes, {rec_mb:.1f} MB train.rec "
              f"({time.perf_counter() - start:.1f} s to generate)")
        copy_mbps, convert_mbps = bench_convert(work / "rec", work, args.repeats, (1, args.parts))
        summary = convert_rec(work / "rec", work / "of", args.parts, progress=False)
        if summary.records != args.images or summary.bytes <= rec_mb * 1e6 * 0.9:
            raise SystemExit(f"convert wrote {summary.records} records, {summary.bytes} bytes: not the whole dataset")
        print(f"plain copy (shutil.copyfile of train.rec): {copy_mbps:9.1f} MB/s")
        for n, mbps in convert_mbps.items():
            print(f"convert rec --parts {n}: {mbps:9.1f} MB/s  ({args.images * mbps / rec_mb:.0f} records/s)")
        mx_rps, ff_rps = bench_readers(work / "rec", args.repeats)
        print(f"read records: mxnet.recordio {mx_rps:.0f}/s, faceflow {ff_rps:.0f}/s")
        # MXNet decodes with min(preprocess_threads, cores - 1) threads: give OneFlow the same number.
        threads = min(args.threads, max((os.cpu_count() or 1) - 1, 1))
        mx_ips, of_ips = bench_pipelines(work / "im2rec", work / "of", threads, args.batch, args.batches,
                                         args.rounds)
        print(f"input pipeline ({threads} decode threads, batch {args.batch}): "
              f"mx.io.ImageRecordIter {mx_ips:.0f} img/s, TrainPipeline {of_ips:.0f} img/s")
    print(f"ratio convert --parts {args.parts}/copy: {convert_mbps[args.parts] / copy_mbps:.3f}")
    print(f"ratio convert --parts 1/copy (goal >= 0.5): {convert_mbps[1] / copy_mbps:.3f}")
    print(f"ratio faceflow/mxnet record reader: {ff_rps / mx_rps:.3f}")
    print(f"ratio TrainPipeline/ImageRecordIter (goal >= 1.0): {of_ips / mx_ips:.3f}")


if __name__ == "__main__":
    main()
