"""Embedding parity between runtimes (OneFlow, onnxruntime, MXNet) on a batch of real decoded images.

Every export and import is checked this way: max abs difference and minimum cosine per image; the
minimum cosine must reach `MIN_COSINE` or the export fails.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from faceflow.errors import FaceflowError

MIN_COSINE = 0.9999
IMAGE_SIZE = 112


@dataclass(frozen=True)
class Parity:
    """How closely a converted model reproduces the reference embeddings."""

    max_abs_diff: float
    min_cosine: float
    images: int

    @property
    def passed(self) -> bool:
        """True when every image's embeddings agree to `MIN_COSINE`."""
        return self.min_cosine >= MIN_COSINE

    def as_dict(self) -> dict:
        """JSON-ready figures including `passed`."""
        return {**asdict(self), "passed": self.passed}


def drawn_faces(count: int, seed: int = 0) -> np.ndarray:
    """`count` face-like RGB uint8 images (N x 112 x 112 x 3), drawn with PIL and round-tripped through JPEG."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        background = tuple(int(c) for c in rng.integers(0, 256, 3))
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), background)
        draw = ImageDraw.Draw(image)
        skin = tuple(int(c) for c in rng.integers(90, 256, 3))
        cx, cy = 56 + rng.integers(-6, 7), 58 + rng.integers(-6, 7)
        rx, ry = rng.integers(30, 42), rng.integers(40, 52)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
        for ex in (cx - 18, cx + 18):
            draw.ellipse([ex - 6, cy - 14, ex + 6, cy - 6], fill=(20, 20, 20))
        draw.line([cx, cy - 4, cx - 3, cy + 12], fill=(60, 40, 30), width=3)
        draw.arc([cx - 16, cy + 10, cx + 16, cy + 30], 20, 160, fill=(150, 30, 40), width=4)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(decode_image(buffer.getvalue(), f"drawn image {len(images)}"))
    return np.stack(images)


def decode_image(encoded: bytes, where: str) -> np.ndarray:
    """Decode one encoded image to RGB uint8 112 x 112 x 3."""
    try:
        image = Image.open(io.BytesIO(encoded)).convert("RGB")
    except Exception as err:  # PIL raises several types on corrupt data
        raise FaceflowError(f"{where}: cannot decode image ({err})") from None
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def bin_faces(path: str | Path, count: int) -> np.ndarray:
    """The first `count` images of a verification `.bin`, decoded to RGB uint8 N x 112 x 112 x 3."""
    from faceflow.data.verification_bin import read_bin

    encoded, _ = read_bin(path)
    if not encoded:
        raise FaceflowError(f"{path}: no images")
    return np.stack([decode_image(data, f"{path}: image {i}") for i, data in enumerate(encoded[:count])])


def raw_nchw(images: np.ndarray) -> np.ndarray:
    """RGB uint8 N x H x W x 3 -> float32 N x 3 x H x W in 0..255 (what InsightFace MXNet symbols take)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)


def normalised_nchw(images: np.ndarray) -> np.ndarray:
    """RGB uint8 N x H x W x 3 -> float32 N x 3 x H x W in (x - 127.5) / 127.5 (faceflow's and the ONNX input)."""
    return ((raw_nchw(images) - 127.5) / 127.5).astype(np.float32)


def oneflow_embeddings(model, batch: np.ndarray) -> np.ndarray:
    """Embeddings of a normalised NCHW batch from a OneFlow backbone in eval mode."""
    from faceflow.runtime.flow import flow

    model.eval()
    with flow.no_grad():
        return model(flow.tensor(batch, dtype=flow.float32)).numpy()


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Max abs difference and minimum per-row cosine between two embedding batches."""
    if reference.shape != candidate.shape:
        raise FaceflowError(f"embedding shapes differ: {reference.shape} vs {candidate.shape}")
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = np.sum(ref * cand, axis=1) / np.maximum(norms, 1e-30)
    return Parity(max_abs_diff=float(np.max(np.abs(ref - cand))), min_cosine=float(np.min(cosine)),
                  images=int(ref.shape[0]))


def require(parity: Parity, what: str) -> Parity:
    """Return `parity`, or raise naming `what` when its minimum cosine is below `MIN_COSINE`."""
    if not parity.passed:
        raise FaceflowError(f"{what}: embeddings differ from OneFlow: min cosine {parity.min_cosine:.6f} "
                            f"< {MIN_COSINE} (max abs diff {parity.max_abs_diff:.3g} on {parity.images} images)")
    return parity
