"""Benchmark: `convert rec` vs a plain copy of the same .rec bytes, the cost of verifying every image, and the
OneFlow training input pipeline vs MXNet's ImageRecordIter (same data, same CPU, same decode threads requested).
Ratios are printed last.

Convert ratio = MB/s of `convert_rec` (read train.rec + idx + property, check every record, write
OFRecord parts atomically) / MB/s of `shutil.copyfile(train.rec)` (the kernel reads and writes the
same bytes with sendfile, no per-record work), both over train.rec's size, runs alternating in one
process, best of --repeats each. convert_rec frames records in the calling thread while one writer
thread writes the previous ones, so it may keep up to two cores busy; the copy keeps one. The same
ratio in CPU time of the process (every thread of both sides) is printed too: it moves much less
than the wall-clock one with the load of a shared machine.

The copy ratios time `convert rec --no-verify` (framing and JPEG markers only). Verification (the default:
every image decoded as OneFlow's training decoder would, on a thread pool over the usable CPUs) is timed in
the same alternating runs: "verified/unverified" is the wall-clock ratio of `convert rec --parts 1` with and
without it, so its cost in units of the unverified conversion is that ratio minus one.

Size: 20000 face-sized JPEGs (~120 MB) by default. Real InsightFace sets hold 5.8M-17M images (GBs),
so what matters to users is the per-record cost. With 3000 images (18 MB) the copy takes ~6 ms and
convert's fixed costs (opening, index, temp dir + rename, meta.json: ~1 ms) are ~10% of its time;
at 20000 they are below 2%, while the data still fits the page cache, so both sides are measured
CPU-bound (the worst case for the ratio: a disk-bound copy of a real dataset is slower).

Pipelines: every run is a bench/pipeline_run.py process pinned (sched_setaffinity before it starts,
so every thread the library creates inherits it) to the same CPUs as the other side's runs; it builds its
pipeline, decodes --warmup batches untimed, then times 3 windows of --batches batches for each of two
consumers: "numpy" hands images and labels over as NumPy arrays (MXNet copies them out; OneFlow gives
views but waits twice per batch), "ready" waits once per batch until both are ready for the next op, as
a training step does. The sides alternate (first one swapped every round), each keeps its best window.
Headline: both pinned to ONE CPU with 1 decode thread requested, so both have the same core whatever
their thread pools: ImageRecordIter caps preprocess_threads at cores - 1 (1 here, read back from its
log), OneFlow 0.9 decodes on its compute pool, sized to the machine's core count at start-up
(hardware_concurrency ignores affinity; no environment variable changes it). Secondary: both on every
CPU with 2 threads requested. Threads busy (>= 5% of a core) and cores busy are printed per side.

The single-CPU pipeline ratio depends on the machine's load: 1.22-1.34 on an idle machine (load
average below 2), 0.75-0.80 while other jobs loaded both cores (load 8-20). Where a core is shared,
OneFlow loses more (perf, one CPU): its `.numpy()` wait blocks then busy-spins (BlockingThenBusy, no
yield), so the woken main thread spins on the worker's time (~20% of samples, once per wait), and
CropMirrorNormalize's per-element loop costs about as much as the JPEG decode itself (~28% vs ~36%).
Replacing CropMirrorNormalize by image flip + cast + batched matmul transpose gives bit-identical
output but is no faster; eager permute/flip are ~5x slower.

Usage: python bench/convert.py [--images 20000] [--cpu N] [--threads 1] [--batch 64] [--batches 80] [--parts 8]
                               [--convert-only]
The headline convert ratio is 1 part (one file in, one file out, like the copy); N parts is also shown.
--convert-only stops after the conversion figures (no record readers, no pipelines).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from faceflow.data.convert import convert_rec
from faceflow.data.image_verify import usable_cpus
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


def bench_convert(data_dir: Path, work: Path, repeats: int, parts: tuple[int, ...]
                  ) -> tuple[dict[str, float], dict[int, dict[str, float]], dict[str, float]]:
    """Copy, {parts: unverified convert} and verified `--parts 1` convert MB/s over the bytes of train.rec,
    each as {"wall": ..., "cpu": ...}.

    Runs alternate, each to a fresh path, outputs deleted outside the timed region; the best run of
    each is kept (the machine is shared). "cpu" divides by the process's CPU time (the copy's sendfile
    runs in the calling thread, the conversion in it and its writer thread), which other processes
    disturb less.
    """
    rec = data_dir / "train.rec"
    size_mb = rec.stat().st_size / 1e6
    copy_times: list[tuple[float, float]] = []
    convert_times: dict[int, list[tuple[float, float]]] = {n: [] for n in parts}
    verified_times: list[tuple[float, float]] = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        shutil.copyfile(rec, work / "copy.rec")
        copy_times.append((time.perf_counter() - wall, time.process_time() - cpu))
        (work / "copy.rec").unlink()
        for n, verify in [(n, False) for n in parts] + [(1, True)]:
            wall, cpu = time.perf_counter(), time.process_time()
            convert_rec(data_dir, work / "of", n, verify=verify, progress=False)
            (verified_times if verify else convert_times[n]).append((time.perf_counter() - wall,
                                                                     time.process_time() - cpu))
            shutil.rmtree(work / "of")

    def mbps(times: list[tuple[float, float]]) -> dict[str, float]:
        return {"wall": size_mb / min(t[0] for t in times), "cpu": size_mb / min(t[1] for t in times)}

    return mbps(copy_times), {n: mbps(t) for n, t in convert_times.items()}, mbps(verified_times)


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


CONSUMERS = {"numpy": "both outputs handed over as NumPy arrays",
             "ready": "one wait per batch until both are ready for the next op (as a training step)"}


def run_pipeline(side: str, im2rec_dir: Path, of_dir: Path, cpus: set[int], threads: int, batch: int, batches: int,
                 warmup: int, windows: int) -> dict:
    """One bench/pipeline_run.py process for `side`, pinned to `cpus` before it starts: its JSON result."""
    command = [sys.executable, str(Path(__file__).with_name("pipeline_run.py")), side, str(im2rec_dir), str(of_dir),
               "--threads", str(threads), "--batch", str(batch), "--batches", str(batches),
               "--warmup", str(warmup), "--windows", str(windows)]
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    if done.returncode != 0:
        raise SystemExit(f"{side} pipeline run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_pipelines(im2rec_dir: Path, of_dir: Path, cpus: set[int], threads: int, batch: int, batches: int,
                    warmup: int, rounds: int) -> dict[str, dict]:
    """{"mxnet"/"oneflow": {consumer: best window, ...}}: decode, mirror, normalize, NCHW float32 batches.

    Every run is its own process pinned to `cpus` (so neither side decodes in the background while the
    other is measured, and neither holds idle threads of the other library); the sides alternate, the
    first one swapped every round, and each keeps its best run (the machine is shared).
    """
    results: dict[str, list[dict]] = {"mxnet": [], "oneflow": []}
    for r in range(rounds):
        for side in ("mxnet", "oneflow") if r % 2 == 0 else ("oneflow", "mxnet"):
            results[side].append(run_pipeline(side, im2rec_dir, of_dir, cpus, threads, batch, batches, warmup, 3))
    return {side: {"decode_threads": runs[0]["decode_threads"], "cpus": runs[0]["cpus"],
                   **{consumer: max((run[consumer] for run in runs), key=lambda kept: kept["images_per_second"])
                      for consumer in CONSUMERS}}
            for side, runs in results.items()}


def print_pipelines(title: str, pipes: dict[str, dict]) -> None:
    """Per consumer and side: best images/s and what that run really used."""
    print(title)
    for consumer, meaning in CONSUMERS.items():
        print(f"  {meaning}:")
        for side, label in (("mxnet", "mx.io.ImageRecordIter"), ("oneflow", "faceflow TrainPipeline")):
            run, kept = pipes[side], pipes[side][consumer]
            pool = "decode threads (its log)" if side == "mxnet" else "compute-pool threads decode"
            print(f"    {label:24s} {kept['images_per_second']:7.0f} img/s  CPUs {run['cpus']}, "
                  f"{run['decode_threads']} {pool}, {kept['threads_busy']}/{kept['threads']} threads busy, "
                  f"{kept['cores_busy']:.2f} cores busy")


def print_verification_ratios(unverified: dict[str, float], verified: dict[str, float]) -> None:
    """Verified vs unverified `convert rec --parts 1`: wall clock (what a user waits) and CPU time (the work)."""
    print(f"ratio convert verified/unverified in CPU time (load-independent): {unverified['cpu'] / verified['cpu']:.3f}")
    print(f"ratio convert verified/unverified, wall clock (its cost = ratio - 1): "
          f"{unverified['wall'] / verified['wall']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000, help="face-sized JPEGs in the dataset (see the docstring)")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)),
                        help="the one CPU both pipelines are pinned to for the headline ratio")
    parser.add_argument("--threads", type=int, default=1, help="decode threads requested from both when pinned")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=80, help="timed batches per pipeline run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches before each timed pipeline run")
    parser.add_argument("--repeats", type=int, default=20,
                        help="alternating copy/convert runs, best of each kept (the machine is shared)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="alternating pinned pipeline runs per side (each best of 3 windows; best kept)")
    parser.add_argument("--all-rounds", type=int, default=2,
                        help="alternating runs per side on every CPU, one thread per CPU requested (secondary figure)")
    parser.add_argument("--parts", type=int, default=8, help="parts of the second convert measurement")
    parser.add_argument("--convert-only", action="store_true", help="stop after the conversion figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faceflow-bench-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        records = make_images(args.images, args.classes)
        write_insightface_dataset(work / "rec", records, args.classes)
        write_im2rec_copy(records, work / "im2rec")
        del records
        for path in (p for p in work.rglob("*") if p.is_file()):  # written back now, not while timing below
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        rec_mb = (work / "rec" / "train.rec").stat().st_size / 1e6
        print(f"data: {args.images} images, {args.classes} classes, {rec_mb:.1f} MB train.rec "
              f"({time.perf_counter() - start:.1f} s to generate); load average {os.getloadavg()[0]:.2f}")
        copy_mbps, convert_mbps, verified_mbps = bench_convert(work / "rec", work, args.repeats, (1, args.parts))
        summary = convert_rec(work / "rec", work / "of", args.parts, progress=False)
        if summary.records != args.images or summary.bytes <= rec_mb * 1e6 * 0.9:
            raise SystemExit(f"convert wrote {summary.records} records, {summary.bytes} bytes: not the whole dataset")
        print(f"plain copy (shutil.copyfile of train.rec): {copy_mbps['wall']:7.1f} MB/s "
              f"(per CPU second: {copy_mbps['cpu']:.1f})")
        for n, mbps in convert_mbps.items():
            print(f"convert rec --no-verify --parts {n}: {mbps['wall']:7.1f} MB/s "
                  f"({args.images * mbps['wall'] / rec_mb:.0f} records/s; per CPU second: {mbps['cpu']:.1f} MB)")
        print(f"convert rec --parts 1 (every image decoded, {usable_cpus()} CPUs): {verified_mbps['wall']:7.1f} MB/s "
              f"({args.images * verified_mbps['wall'] / rec_mb:.0f} records/s; per CPU second: "
              f"{verified_mbps['cpu']:.1f} MB)")
        if args.convert_only:
            print(f"ratio convert --parts 1/copy (goal >= 0.5): {convert_mbps[1]['wall'] / copy_mbps['wall']:.3f}")
            print_verification_ratios(convert_mbps[1], verified_mbps)
            return
        mx_rps, ff_rps = bench_readers(work / "rec", max(args.repeats // 3, 1))
        print(f"read records: mxnet.recordio {mx_rps:.0f}/s, faceflow {ff_rps:.0f}/s")
        all_cpus = os.sched_getaffinity(0)
        pinned = bench_pipelines(work / "im2rec", work / "of", {args.cpu}, args.threads, args.batch, args.batches,
                                 args.warmup, args.rounds)
        both = bench_pipelines(work / "im2rec", work / "of", all_cpus, len(all_cpus), args.batch, args.batches, args.warmup,
                               args.all_rounds)
        print_pipelines(f"input pipeline on every CPU {sorted(all_cpus)}, {len(all_cpus)} decode threads requested from both "
                        f"(secondary; best of {args.all_rounds} runs x 3 x {args.batches} batches of {args.batch}):", both)
        print_pipelines(f"input pipeline pinned to CPU {args.cpu}, {args.threads} decode thread(s) requested from both "
                        f"(best of {args.rounds} runs x 3 x {args.batches} batches of {args.batch}):", pinned)
        print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"ratio convert --parts 1/copy in CPU time (load-independent): "
          f"{convert_mbps[1]['cpu'] / copy_mbps['cpu']:.3f}")
    print(f"ratio convert --parts {args.parts}/copy: {convert_mbps[args.parts]['wall'] / copy_mbps['wall']:.3f}")
    print(f"ratio convert --parts 1/copy (goal >= 0.5): {convert_mbps[1]['wall'] / copy_mbps['wall']:.3f}")
    print_verification_ratios(convert_mbps[1], verified_mbps)
    print(f"ratio faceflow/mxnet record reader: {ff_rps / mx_rps:.3f}")
    for name, pipes, consumer in (("every CPU", both, "numpy"), ("every CPU", both, "ready"),
                                  ("same single CPU", pinned, "ready"), ("same single CPU", pinned, "numpy")):
        ratio = pipes["oneflow"][consumer]["images_per_second"] / pipes["mxnet"][consumer]["images_per_second"]
        goal = " (goal >= 1.0)" if pipes is pinned and consumer == "numpy" else ""
        print(f"ratio TrainPipeline/ImageRecordIter, {name}, {consumer}{goal}: {ratio:.3f}")


if __name__ == "__main__":
    main()
