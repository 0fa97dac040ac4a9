"""Helpers for the training tests: a tiny network config, a tiny OFRecord dataset, per-step random batches."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from faceflow.runtime.flow import flow

from faceflow.data.ofrecord import PartsWriter, serialize_train_record

REPO = Path(__file__).resolve().parent.parent
FACEFLOW = [sys.executable, "-m", "faceflow.cli.main"]

TINY: dict[str, Any] = {
    "network": "mbf",
    "embedding_size": 16,
    "network_kwargs": {"width_mult": 0.125, "blocks": [1, 1, 1, 1]},
    "num_classes": 6,
    "loss": "cosface",
    "margins": {"s": 8.0},
    "batch_size": 4,
    "max_steps": 6,
    "lr": 0.02,
    "warmup_steps": 2,
    "lr_steps": [4],
    "scales": [0.1],
    "checkpoint_every": 2,
    "log_every": 1,
    "seed": 3,
    "num_threads": 1,
}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """The tiny run config (validated, defaults filled) with `overrides` applied."""
    from faceflow.train.config import DEFAULTS, validate_config

    return validate_config({**DEFAULTS, **TINY, **overrides})


def write_config(path: Path, **overrides: Any) -> Path:
    """Write the tiny config (plus overrides) as YAML."""
    path.write_text(yaml.safe_dump({**TINY, **overrides}))
    return path


def make_ofrecord(out_dir: Path, classes: int = 6, per_class: int = 4, parts: int = 2, seed: int = 0) -> Path:
    """A tiny OFRecord training set: 112x112 JPEGs whose colour pattern depends on the class."""
    rng = np.random.RandomState(seed)
    with PartsWriter(out_dir, parts) as writer:
        for label in range(classes):
            base = rng.randint(0, 256, size=(1, 1, 3))
            for _ in range(per_class):
                pixels = np.clip(base + rng.randint(-30, 30, size=(112, 112, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
                writer.write(serialize_train_record(buffer.getvalue(), label))
    (out_dir / "meta.json").write_text(json.dumps({"classes": classes, "records": classes * per_class,
                                                   "image_size": [112, 112]}))
    return out_dir


def step_batches(config: dict[str, Any], placement: flow.placement, start: int):
    """Random global batches that depend only on (seed, step), so a resumed run sees the same data."""
    step = start
    per_rank = config["batch_size"]
    world = len(np.asarray(placement.ranks).reshape(-1))
    while True:
        rng = np.random.RandomState(config["seed"] * 100003 + step)
        images = rng.randn(per_rank * world, 3, 112, 112).astype(np.float32)
        labels = rng.randint(0, config["num_classes"], per_rank * world).astype(np.int32)
        yield (flow.tensor(images, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=flow.sbp.split(0)),
               flow.tensor(labels, placement=placement, sbp=flow.sbp.broadcast).to_global(sbp=flow.sbp.split(0)))
        step += 1


def run_faceflow(args: list[str], timeout: float = 180, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run `faceflow ARGS` in a fresh interpreter, capturing text output."""
    env = {**os.environ, "USER": os.environ.get("USER", "root")}
    return subprocess.run(FACEFLOW + args, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
                          **kwargs)


def free_port() -> int:
    """A TCP port that is free on this machine right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_ranks(script: Path, out: Path, *args: str, timeout: float = 240) -> dict[str, np.ndarray]:
    """Run `script OUT ARGS` on 2 CPU processes through faceflow's launcher; returns the arrays it saved to OUT."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "faceflow.runtime.launch", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(script), str(out), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(np.load(out))
