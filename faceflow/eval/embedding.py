"""Embeddings of verification images and their horizontal flips (InsightFace's test-time flip).

Images are decoded once to uint8 RGB NCHW (cached by the caller), then normalised per batch to
`(x - 127.5) / 127.5` float32, as the backbones expect. `flip_embeddings` runs that on any engine's forward
pass; only the OneFlow helpers load OneFlow, when called (onnxruntime validation does not need it).
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from PIL import Image

from faceflow.errors import DataFormatError

if TYPE_CHECKING:
    from faceflow.runtime.flow import flow

IMAGE_SIZE = 112

# a runtime's forward pass: normalised float32 NCHW batch -> raw embeddings (N x D)
Forward = Callable[[np.ndarray], np.ndarray]


def _decode_one(data: bytes, size: int) -> np.ndarray:
    """One encoded image -> uint8 RGB CHW of `size` x `size` (resized bilinearly when it differs)."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def decode_images(encoded: Sequence[bytes], source: str = "images", size: int = IMAGE_SIZE,
                  threads: int = 2) -> np.ndarray:
    """Decode encoded images to a uint8 N x 3 x size x size RGB array; errors name `source` and the index."""
    out = np.empty((len(encoded), 3, size, size), dtype=np.uint8)

    def work(index: int) -> None:
        try:
            out[index] = _decode_one(encoded[index], size)
        except Exception as err:  # PIL raises several types for corrupt data
            raise DataFormatError(f"{source}: image {index}: cannot decode ({type(err).__name__}: {err})") from None

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(work, range(len(encoded))))
    return out


def normalize_batch(images: np.ndarray) -> np.ndarray:
    """uint8 NCHW RGB -> float32 `(x - 127.5) / 127.5`."""
    return (images.astype(np.float32) - 127.5) / 127.5


def flipped(batch: np.ndarray) -> np.ndarray:
    """Horizontal flips of an NCHW batch (contiguous, as runtimes want their input)."""
    return np.ascontiguousarray(batch[:, :, :, ::-1])


def flip_embeddings(forward: Forward, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32, N x D) of uint8 NCHW `images` and of their flips: each batch is normalised and
    run once together with its flips through `forward` (normalised NCHW float32 -> raw embeddings)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: must be positive, got {batch_size}")
    originals, flips = [], []
    for start in range(0, len(images), batch_size):
        batch = normalize_batch(images[start:start + batch_size])
        out = np.asarray(forward(np.concatenate([batch, flipped(batch)])), dtype=np.float32)
        originals.append(out[: len(batch)])
        flips.append(out[len(batch):])
    return np.concatenate(originals), np.concatenate(flips)


def _model_input(batch: np.ndarray, reference: flow.Tensor) -> flow.Tensor:
    """Host batch as a tensor on the model's device (broadcast global tensor for a global model)."""
    from faceflow.runtime.flow import flow

    tensor = flow.tensor(batch)
    if reference.is_global:
        return tensor.to_global(placement=reference.placement, sbp=flow.sbp.broadcast)
    return tensor.to(reference.device)


def oneflow_forward(model: flow.nn.Module) -> Forward:
    """`forward` of a OneFlow backbone (local or global) for `flip_embeddings`; call it in eval mode, no_grad."""
    from faceflow.runtime.flow import flow

    reference = next(model.parameters())

    def forward(batch: np.ndarray) -> np.ndarray:
        out = model(_model_input(batch, reference))
        if out.is_global:
            out = out.to_global(sbp=flow.sbp.broadcast).to_local()
        return out.numpy()

    return forward


def embed(model: flow.nn.Module, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (float32, N x D) of uint8 NCHW `images` and of their horizontal flips, in eval mode."""
    from faceflow.runtime.flow import flow

    was_training = model.training
    model.eval()
    try:
        with flow.no_grad():
            return flip_embeddings(oneflow_forward(model), images, batch_size)
    finally:
        model.train(was_training)
