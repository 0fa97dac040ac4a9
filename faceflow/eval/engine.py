"""Which engine embeds a model where: `open_embedder(MODEL, device, ...)` for validation and IJB.

MODEL is a faceflow checkpoint directory or an `.onnx` file. A checkpoint on CUDA runs in OneFlow eager on
the GPU. On CPU the `auto` engine runs onnxruntime on the checkpoint's cached ONNX graph (exported once and
parity-checked, `faceflow.eval.onnx_cache`), an order of magnitude faster than OneFlow eager there; when the
export or its parity check fails it says why in one line and falls back to OneFlow eager. An `.onnx` MODEL
runs in onnxruntime. Flips and normalisation are `faceflow.eval.embedding`'s, whatever the engine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from faceflow.errors import FaceflowError
from faceflow.eval.embedding import Forward, flip_embeddings

ENGINES = ("auto", "onnxruntime", "oneflow")
ONNXRUNTIME, ONEFLOW = "onnxruntime", "oneflow"


@dataclass
class Embedder:
    """A model ready to embed: the engine and device running it, and its forward pass
    (normalised float32 NCHW -> raw embeddings), which `faceflow.eval.ijb_features` takes as `Embed`."""

    name: str
    engine: str  # onnxruntime | oneflow
    device: str  # cpu | cuda
    forward: Forward = field(repr=False)
    batch_size: int = 64
    model: dict[str, Any] = field(default_factory=dict)  # path, format, and for a checkpoint network, step
    note: str = ""  # why this engine, for the log line

    @property
    def step(self) -> int:
        """The checkpoint's step (0 for an ONNX file)."""
        return int(self.model.get("step", 0))

    @property
    def network(self) -> str:
        """The checkpoint's network name ('onnx' for an ONNX file)."""
        return str(self.model.get("network", "onnx"))

    def embed(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of uint8 NCHW `images` and of their flips (N x D float32 each), batch by batch."""
        return flip_embeddings(self.forward, images, self.batch_size)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Raw embeddings of a normalised NCHW float32 batch."""
        return np.asarray(self.forward(batch), dtype=np.float32)

    def describe(self) -> str:
        """One log line: model, engine, device, and why."""
        return f"{self.name}: {self.engine} on {self.device}" + (f" ({self.note})" if self.note else "")


def open_embedder(model: str | os.PathLike, device: str = "auto", batch_size: int = 64, threads: int | None = None,
                  onnx_cache: str | os.PathLike | None = None, engine: str = "auto",
                  log: Callable[[str], None] = print) -> Embedder:
    """An Embedder for a checkpoint directory or an `.onnx` file on `device` (cpu | cuda | auto) with `engine`
    (auto | onnxruntime | oneflow); `threads` caps the CPU threads, `onnx_cache` places the exported graph."""
    path = Path(model)
    if engine not in ENGINES:
        raise FaceflowError(f"--engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    if batch_size < 1:
        raise FaceflowError(f"--batch-size: must be positive, got {batch_size}")
    if threads is not None and threads < 1:
        raise FaceflowError(f"--threads: must be positive, got {threads}")
    if path.suffix.lower() == ".onnx":
        embedder = _onnx_file(path, device, engine, batch_size, threads)
    else:
        embedder = _checkpoint(path, device, engine, batch_size, threads, onnx_cache, log)
    log(embedder.describe())
    return embedder


def _onnx_file(path: Path, device: str, engine: str, batch_size: int, threads: int | None) -> Embedder:
    if engine == ONEFLOW:
        raise FaceflowError(f"{path}: --engine oneflow needs a faceflow checkpoint; an ONNX file runs in onnxruntime")
    if device == "cuda":
        raise FaceflowError(f"{path}: --device cuda: an ONNX file runs in onnxruntime on CPU")
    if not path.is_file():
        raise FaceflowError(f"{path}: no such ONNX file")
    return Embedder(str(path), ONNXRUNTIME, "cpu", onnxruntime_forward(path, threads), batch_size,
                    {"path": str(path), "format": "onnx"})


def _checkpoint(path: Path, device: str, engine: str, batch_size: int, threads: int | None,
                onnx_cache: str | os.PathLike | None, log: Callable[[str], None]) -> Embedder:
    from faceflow.checkpoint import read_checkpoint_meta
    from faceflow.runtime.device import resolve_device

    config, state = read_checkpoint_meta(path)
    if engine == ONNXRUNTIME and device == "cuda":
        raise FaceflowError("--engine onnxruntime: runs on CPU; use --device cpu (or --engine auto on CUDA)")
    try:
        resolved = "cpu" if engine == ONNXRUNTIME else resolve_device(device)
    except (ValueError, RuntimeError) as err:
        raise FaceflowError(f"--device: {err}") from None
    model = {"path": str(path), "format": "checkpoint", "network": config.get("network"), "step": int(state["step"])}
    if resolved == "cuda" or engine == ONEFLOW:
        note = "--engine oneflow" if engine == ONEFLOW else "CUDA"
        return _oneflow(path, resolved, batch_size, threads, model, note)
    from faceflow.eval.onnx_cache import onnx_for_checkpoint

    cached = onnx_for_checkpoint(path, onnx_cache)
    if cached.path is None:
        if engine == ONNXRUNTIME:
            raise FaceflowError(f"--engine onnxruntime: {cached.reason}")
        log(f"{path}: onnxruntime not used, OneFlow eager instead: {cached.reason}")
        return _oneflow(path, "cpu", batch_size, threads, model, "fallback")
    parity = cached.record.get("min_cosine")
    note = f"{'exported' if cached.exported else 'cached'} {cached.path}, parity min cosine {parity:.6f}"
    return Embedder(str(path), ONNXRUNTIME, "cpu", onnxruntime_forward(cached.path, threads), batch_size, model, note)


def _oneflow(path: Path, device: str, batch_size: int, threads: int | None, model: dict[str, Any],
             note: str) -> Embedder:
    from faceflow.checkpoint import load_backbone
    from faceflow.eval.embedding import oneflow_forward
    from faceflow.runtime.device import local_device
    from faceflow.runtime.flow import flow

    if threads is not None and device == "cpu" and threads < (os.cpu_count() or 1):  # OneFlow warns at >= cores
        flow.set_num_threads(threads)
    network, _, _ = load_backbone(path, device=str(local_device(device)))
    network.eval()
    run = oneflow_forward(network)

    def forward(batch: np.ndarray) -> np.ndarray:
        with flow.no_grad():
            return run(batch)

    return Embedder(str(path), ONEFLOW, device, forward, batch_size, model, note)


def onnxruntime_forward(path: Path, threads: int | None = None) -> Forward:
    """The forward pass of an ONNX graph (one input, first output) in onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads yield shared cores
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's errors are not a stable type
        raise FaceflowError(f"{path}: onnxruntime cannot load the model: {err}".splitlines()[0]) from None
    name = session.get_inputs()[0].name

    def forward(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    return forward
