"""What the workflow's IJB jobs add to `make run`: one `faceflow ijb` call as the ijb_eval job runs it (the
demo network exported to ONNX, the default-size synthetic IJB-C of the demo dataset, 2 threads), against the
baseline of one validation job of the same model (`faceflow validate` on the demo-size synthetic LFW, of
which the workflow runs 12 per demo run). The network has random weights: only the time matters here.
Prints the median wall and CPU time of each over --rounds and the ratio IJB / validation of CPU time last
(wall time follows the machine's load).

    .venv/bin/python bench/ijb_workflow.py [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from faceflow.checkpoint import write_checkpoint
from faceflow.data import synth
from faceflow.data.synth_ijb import write_benchmark
from faceflow.data.verification_bin import write_bin
from faceflow.models import build_backbone
from faceflow.runtime.flow import flow
from faceflow.train.config import load_config

FACEFLOW = [sys.executable, "-m", "faceflow.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def demo_checkpoint(root: Path) -> Path:
    """A checkpoint of the demo config's network (random weights)."""
    config = load_config("demo", [])
    keys = {key: config[key] for key in ("network", "embedding_size", "network_kwargs")}
    model = build_backbone(keys["network"], embedding_size=int(keys["embedding_size"]), **keys["network_kwargs"])
    return write_checkpoint(root, 0, keys, {"epoch": 0},
                            lambda tmp: flow.save(model.state_dict(), str(tmp / "backbone")))


def seconds(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) time of one command (output discarded; a failure stops the benchmark)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = demo_checkpoint(work / "checkpoints")
        subprocess.run([*FACEFLOW, "export", "bundle", str(checkpoint), str(work / "export"), "--formats", "onnx"],
                       check=True, env=ENV, capture_output=True)
        pool = synth.ijb_pool("IJBC", synth.DEFAULT_CLASSES, synth.DEFAULT_PAIRS, synth.DEFAULT_IDENTITIES)
        images = write_benchmark(work / "ijb" / "IJBC", "IJBC", pool,
                                 partial(synth.identity_params, synth.DEFAULT_SEED), synth.DEFAULT_SEED)
        lfw, issame = synth.benchmark_images("lfw", synth.DEFAULT_CLASSES, synth.DEFAULT_PAIRS, synth.DEFAULT_SEED)
        write_bin(work / "lfw.bin", lfw, issame)
        ijb = [*FACEFLOW, "ijb", str(work / "export" / "model.onnx"), str(work / "ijb"), "--target", "IJBC",
               "--threads", "2", "--quiet", "--out", str(work / "IJBC.json")]
        validate = [*FACEFLOW, "validate", str(checkpoint), "--bench", f"lfw={work / 'lfw.bin'}", "--device", "cpu",
                    "--batch-size", "64", "--out", str(work / "lfw.json")]
        ijb_runs = [seconds(ijb) for _ in range(args.rounds)]
        validate_runs = [seconds(validate) for _ in range(args.rounds)]
        embed = json.loads((work / "IJBC.json").read_text())["seconds"]["embed"]
        (ijb_wall, ijb_cpu), (validate_wall, validate_cpu) = (
            [statistics.median(column) for column in zip(*runs)] for runs in (ijb_runs, validate_runs))
        print(f"faceflow ijb (demo mbf ONNX, synthetic IJB-C: {images} crops, {synth.DEFAULT_IDENTITIES} identities): "
              f"{ijb_wall:.1f} s wall, {ijb_cpu:.1f} CPU-s (embedding {embed:.1f} s wall)")
        print(f"faceflow validate (same network, checkpoint, synthetic LFW {len(issame)} pairs): "
              f"{validate_wall:.1f} s wall, {validate_cpu:.1f} CPU-s")
        print(f"ratio IJB job / validation job, CPU time: {ijb_cpu / validate_cpu:.2f}")


if __name__ == "__main__":
    main()
