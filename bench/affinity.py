"""Benchmark: the `demo` config trained by 2 CPU processes with and without `cpu_affinity`.

Unpinned, each OneFlow process's main, VM and compute threads (which wait by yielding) float over both
cores and preempt the other process's threads; pinned, local rank r keeps to its own slice of the CPUs
(faceflow/runtime/affinity.py). Each round runs `faceflow train demo` for --steps steps both ways on
the same synthetic OFRecord data (order swapped every round); a run's speed is the mean samples/s of
its log lines after --warmup steps. The ratio pinned / unpinned of the summed speeds is printed last.

Usage: python bench/affinity.py [--rounds 2] [--steps 120] [--warmup 40]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FACEFLOW = [sys.executable, "-m", "faceflow.cli.main"]


def prepare_data(work: Path) -> Path:
    """A small synthetic dataset (300 identities x 8 images) converted to 2 OFRecord parts."""
    subprocess.run([*FACEFLOW, "synth", str(work / "syn"), "--classes", "300", "--per-class", "8",
                    "--pairs", "20"], check=True, capture_output=True)
    subprocess.run([*FACEFLOW, "convert", "rec", str(work / "syn"), str(work / "ofr"), "--parts", "2",
                    "--shuffle", "--quiet"], check=True, capture_output=True)
    return work / "ofr"


def train_speed(data: Path, out: Path, pinned: bool, steps: int, warmup: int, port: int) -> float:
    """Mean logged samples/s (all ranks) of a `faceflow train demo` run after `warmup` steps."""
    command = [*FACEFLOW, "train", "demo", "--out", str(out), "--master-port", str(port),
               "--set", f"train_data={data}", "--set", f"max_steps={steps}", "--set", "checkpoint_every=100000",
               "--set", "val_benchmarks={}", "--set", f"cpu_affinity={str(pinned).lower()}"]
    subprocess.run(command, check=True, capture_output=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [e["samples_per_sec"] for e in lines if "samples_per_sec" in e and e["step"] > warmup]
    return sum(speeds) / len(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=40)
    args = parser.parse_args()
    totals = {True: 0.0, False: 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-affinity-") as tmp:
        work = Path(tmp)
        data = prepare_data(work)
        for round_ in range(args.rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for pinned in order:
                speed = train_speed(data, work / f"r{round_}-{pinned}", pinned, args.steps, args.warmup,
                                    port=29750 + 2 * round_ + int(pinned))
                totals[pinned] += speed
                print(f"round {round_}  cpu_affinity={str(pinned).lower():5s}  {speed:7.1f} samples/s", flush=True)
    print(f"cpus: {len(os.sched_getaffinity(0))}, 2 processes x 1 thread, demo config, {args.steps} steps")
    print(f"ratio pinned / unpinned samples/s: {totals[True] / totals[False]:.3f}")


if __name__ == "__main__":
    main()
