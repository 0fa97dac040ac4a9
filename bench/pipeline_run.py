"""One timed run of one training input pipeline, in its own process (started by bench/convert.py).

`python bench/pipeline_run.py mxnet|oneflow IM2REC_DIR OFRECORD_DIR --threads T --batch B --batches N
--warmup W --windows K` builds the pipeline, takes W batches untimed, then times K windows of N batches for
each of two consumers (alternating) and prints one JSON line: per consumer the best window's images/s, the
CPU cores the process kept busy in it and its threads (all, and those busy at least 5% of a core); the
decode threads and the CPUs it may run on. The parent pins the process to
its CPUs before it starts, so every thread the library creates inherits them. The MXNet side never
imports OneFlow (whose idle runtime threads would share the CPU), and vice versa.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

BUSY_SHARE = 0.05


def thread_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) so far of every thread of this process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def mxnet_step(im2rec_dir: Path, threads: int, batch: int) -> tuple[Callable[[str], None], int]:
    """A step taking one ImageRecordIter batch for a consumer, and the decode threads it says it runs.

    MXNet 1.x caps preprocess_threads at cores - 1 and reports the real count only in its verbose log
    on file descriptor 2, which is captured while the iterator is built.
    """
    import mxnet as mx

    with tempfile.TemporaryFile() as log:
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            it = mx.io.ImageRecordIter(path_imgrec=str(im2rec_dir / "train.rec"), path_imgidx=str(im2rec_dir / "train.idx"),
                                       data_shape=(3, 112, 112), batch_size=batch, shuffle=True, rand_mirror=True,
                                       mean_r=127.5, mean_g=127.5, mean_b=127.5, std_r=127.5, std_g=127.5,
                                       std_b=127.5, preprocess_threads=threads, prefetch_buffer=1, round_batch=True,
                                       verbose=True)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        found = re.search(rb"use (\d+) threads for decoding", log.read())
    if found is None:
        raise SystemExit("ImageRecordIter did not log its decode thread count")

    def step(consumer: str) -> None:
        try:
            b = it.next()
        except StopIteration:
            it.reset()
            b = it.next()
        if consumer == "numpy":
            b.data[0].asnumpy()
            b.label[0].asnumpy()
        else:
            b.data[0].wait_to_read()
            b.label[0].wait_to_read()

    return step, int(found.group(1))


def oneflow_step(of_dir: Path, threads: int, batch: int) -> tuple[Callable[[str], None], int]:
    """A step taking one TrainPipeline batch for a consumer (one more in flight), and OneFlow's compute pool size.

    OneFlow 0.9 decodes on its compute thread pool, sized at start-up to the machine's core count
    (std::thread::hardware_concurrency, which ignores CPU affinity).
    """
    from faceflow.data.pipeline import TrainPipeline

    pipeline = TrainPipeline(of_dir, batch, shuffle=True, num_threads=threads)

    in_flight = [pipeline()]

    def step(consumer: str) -> None:
        in_flight.append(pipeline())  # eager ops run asynchronously: the next batch decodes meanwhile
        images, labels = in_flight.pop(0)
        if consumer == "numpy":
            images.numpy()
            labels.numpy()
        else:  # one CPU stream runs the ops in issue order: labels, decoded last, done means images done
            labels.numpy()

    return step, os.cpu_count() or 1


def timed_windows(step: Callable[[str], None], batch: int, batches: int, warmup: int, windows: int) -> dict:
    """{consumer: best of `windows` windows of `batches` batches}, after `warmup` untimed batches.

    Windows of the two consumers alternate: "numpy" hands both outputs over as NumPy arrays (two waits
    per batch), "ready" waits once per batch until both are ready for the next framework op, as a
    training step does.
    """
    for _ in range(warmup):
        step("numpy")
    best: dict[str, dict] = {"numpy": {}, "ready": {}}
    for _ in range(windows):
        for consumer, kept in best.items():
            threads_before = thread_cpu_seconds()
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(batches):
                step(consumer)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu
            threads_after = thread_cpu_seconds()
            busy = sum((threads_after[t] - threads_before.get(t, 0.0)) / seconds >= BUSY_SHARE for t in threads_after)
            images_per_second = batch * batches / seconds
            if images_per_second > kept.get("images_per_second", 0.0):
                kept.update(images_per_second=images_per_second, cores_busy=cpu_seconds / seconds,
                            threads=len(threads_after), threads_busy=busy)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=("mxnet", "oneflow"))
    parser.add_argument("im2rec_dir", type=Path)
    parser.add_argument("ofrecord_dir", type=Path)
    parser.add_argument("--threads", type=int, required=True, help="decode threads requested")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    make: Callable[[Path, int, int], tuple[Callable[[str], None], int]]
    make, data = (mxnet_step, args.im2rec_dir) if args.side == "mxnet" else (oneflow_step, args.ofrecord_dir)
    step, decode_threads = make(data, args.threads, args.batch)
    result = timed_windows(step, args.batch, args.batches, args.warmup, args.windows)
    print(json.dumps({"side": args.side, "decode_threads": decode_threads, "cpus": sorted(os.sched_getaffinity(0)),
                      **result}), flush=True)


if __name__ == "__main__":
    main()
