"""PyTorch for the model-exchange tests: a venv of its own (Python 3.11, torch 2.13.0 CPU, onnx, onnxscript
for torch's ONNX exporters), built once under ~/.cache/faceflow-tests/ outside the repo, and a runner for
`torch_reference_nets.py` in it whose outputs are cached there too. Skips, printing why, only when the venv cannot be built.
`make test`'s workers share both: a file lock makes the first one build while the others wait."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
from cached_venv import CACHE, cached_venv, skip_with_reason

PINS = ("torch==2.13.0", "onnx==1.17.0", "onnxscript==0.7.2")
SCRIPT = Path(__file__).with_name("torch_reference_nets.py")


def _base_python() -> str | None:
    for name in ("python3.11", "python3"):
        found = shutil.which(name)
        if found:
            version = subprocess.run([found, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                     capture_output=True, text=True)
            if version.stdout.strip() == "True":
                return found
    return None


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Held while writing a reference directory (pytest-xdist workers write each only once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def torch_python() -> Path:
    """The venv's python with PINS installed (built on first use; a half-built venv is never used)."""
    base = _base_python()
    if base is None:
        skip_with_reason("no Python 3.11 here (the PyTorch 2.13.0 CPU wheel on this machine is for 3.11)")
    return cached_venv("torch-venv", PINS, base)


def reference_models(specs: list[dict], images: np.ndarray) -> Path:
    """The directory of torch_reference_nets.py's outputs for `specs` (file names relative to it) on `images`,
    cached under CACHE by the script, the specs, the images and PINS: PyTorch runs only when one changes."""
    digest = hashlib.sha256(SCRIPT.read_bytes() + json.dumps([specs, PINS]).encode() + images.tobytes())
    done = CACHE / "reference" / digest.hexdigest()[:16]
    if done.is_dir():
        return done
    python = torch_python()
    with _cache_lock():
        if not done.is_dir():
            _write_references(python, specs, images, done)
    return done


def _write_references(python: Path, specs: list[dict], images: np.ndarray, done: Path) -> None:
    """Run torch_reference_nets.py into a .partial directory, then rename it to `done` (the caller holds the lock)."""
    partial = done.with_name(done.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    np.save(partial / "images.npy", images)
    paths = []
    for i, spec in enumerate(specs):
        absolute = {k: str(partial / v) if k in ("pth", "embeddings", "counts") else v for k, v in spec.items()}
        absolute["images"] = str(partial / "images.npy")
        absolute["onnx"] = [{**o, "path": str(partial / o["path"])} for o in spec.get("onnx", [])]
        paths.append(partial / f"spec{i}.json")
        paths[-1].write_text(json.dumps(absolute))
    ran = subprocess.run([str(python), str(SCRIPT), *map(str, paths)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-3000:]
    partial.rename(done)
