"""The ONNX graph a checkpoint is validated on with onnxruntime: exported once, cached, reused by every job.

The cache is CKPT/validation.onnx (or a path given), written by `faceflow.export.onnx_export` under a temporary
name and renamed. Beside it, validation.parity.json records the checkpoint's fingerprint and the exporter's
parity check (onnxruntime vs OneFlow eager on drawn faces, min cosine >= 0.9999), or why the export failed, so
a failed checkpoint is not retried. An exclusive `flock` on .validation.onnx.lock makes concurrent jobs of one
checkpoint export it once: the others wait, then reuse the file.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from faceflow.checkpoint import load_backbone
from faceflow.data.atomic import atomic_file
from faceflow.errors import FaceflowError
from faceflow.export.onnx_export import export_onnx
from faceflow.export.parity import MIN_COSINE, drawn_faces

DEFAULT_NAME = "validation.onnx"
PARITY_IMAGES = 8
_FINGERPRINTED = ("config.yaml", "state.json")


@dataclass(frozen=True)
class CachedOnnx:
    """The outcome for one checkpoint: the usable graph (None if unusable), whether this call exported it,
    the parity record and, when unusable, why (one line)."""

    path: Path | None
    exported: bool
    record: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def cache_path(checkpoint: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """The cache file of a checkpoint: `explicit`, else CKPT/validation.onnx."""
    return Path(explicit) if explicit is not None else Path(checkpoint) / DEFAULT_NAME


def parity_path(cache: Path) -> Path:
    """The parity record beside a cache file (validation.onnx -> validation.parity.json)."""
    return cache.with_name(f"{cache.stem}.parity.json")


def lock_path(cache: Path) -> Path:
    """The lock file serialising exports of one cache file (kept: removing a lock file races)."""
    return cache.with_name(f".{cache.name}.lock")


def fingerprint(checkpoint: str | os.PathLike) -> str:
    """sha256 over the checkpoint's config and state and the names, sizes and mtimes of its backbone files."""
    root = Path(checkpoint)
    digest = hashlib.sha256()
    for name in _FINGERPRINTED:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    backbone = root / "backbone"
    for path in sorted(p for p in backbone.rglob("*") if p.is_file()) if backbone.is_dir() else ():
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed) for the block; the kernel drops it if we die."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _reuse(cache: Path, record: dict[str, Any], print_: str) -> CachedOnnx | None:
    """The recorded outcome when it belongs to this checkpoint (and its graph is still there), else None."""
    if record.get("fingerprint") != print_:
        return None
    if record.get("passed") is True and cache.is_file():
        return CachedOnnx(cache, exported=False, record=record)
    if record.get("passed") is False:
        return CachedOnnx(None, exported=False, record=record, reason=f"{record.get('error')} (recorded earlier)")
    return None


def _export(checkpoint: Path, cache: Path, print_: str) -> dict[str, Any]:
    """Export the checkpoint's backbone to `cache`; the parity record (passed or the one-line error)."""
    record: dict[str, Any] = {"checkpoint": str(checkpoint), "fingerprint": print_, "onnx": cache.name,
                              "parity_images": PARITY_IMAGES, "min_cosine_required": MIN_COSINE}
    try:
        model, _, _ = load_backbone(checkpoint, device="cpu")
        parity = export_onnx(model, cache, drawn_faces(PARITY_IMAGES))
    except FaceflowError as err:
        cache.unlink(missing_ok=True)
        return {**record, "passed": False, "error": str(err).splitlines()[0]}
    return {**record, **parity.as_dict()}


def onnx_for_checkpoint(checkpoint: str | os.PathLike, cache: str | os.PathLike | None = None) -> CachedOnnx:
    """The checkpoint's cached ONNX graph, exported and parity-checked first if this checkpoint has none yet."""
    checkpoint = Path(checkpoint)
    target = cache_path(checkpoint, cache)
    try:
        print_ = fingerprint(checkpoint)
        with exclusive(lock_path(target)):
            reused = _reuse(target, _read_record(parity_path(target)), print_)
            if reused is not None:
                return reused
            record = _export(checkpoint, target, print_)
            with atomic_file(parity_path(target)) as tmp:
                tmp.write_text(json.dumps(record, indent=2) + "\n")
    except (OSError, FaceflowError) as err:
        return CachedOnnx(None, exported=False, reason=f"{target}: cannot export or cache: {err}".splitlines()[0])
    if not record["passed"]:
        return CachedOnnx(None, exported=False, record=record, reason=record.get("error", "parity failed"))
    return CachedOnnx(target, exported=True, record=record)
