"""Raw-pixel cosine baselines of a verification `.bin` and of an IJB benchmark: what accuracy needs no
learning at all.

Embedding = the flattened pixels in model scaling `(x - 127.5) / 127.5` (image and its flip), scored
with the standard protocol (IJB: on the aligned crops); the synthetic `.bin` sets are built so this stays at
or below 0.75.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from faceflow.data.verification_bin import read_bin
from faceflow.eval.ijb import evaluate_ijb
from faceflow.eval.verification import VerificationResult, evaluate_embeddings


def pixel_embeddings(images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Flattened normalised RGB pixels of each image and of its horizontal flip (float32)."""
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    scaled = (pixels.astype(np.float32) - 127.5) / 127.5
    return scaled.reshape(len(images), -1), scaled[:, :, ::-1].reshape(len(images), -1)


def raw_pixel_result(bin_path: str | Path) -> VerificationResult:
    """The full verification result of the raw-pixel embedding on one `.bin`."""
    images, issame = read_bin(bin_path)
    emb, flipped = pixel_embeddings(images)
    return evaluate_embeddings(emb, issame, flipped)


def raw_pixel_baseline(bin_path: str | Path) -> float:
    """Mean 10-fold accuracy of the raw-pixel embedding on one `.bin`."""
    return raw_pixel_result(bin_path).accuracy


def pixel_embed(batch: np.ndarray) -> np.ndarray:
    """The IJB embedding function of the baseline: a normalised NCHW batch flattened to (N, 3 * H * W)."""
    return np.ascontiguousarray(batch).reshape(len(batch), -1)


def raw_pixel_ijb(ijb_dir: str | Path, target: str) -> dict:
    """The IJB result (as `faceflow ijb` writes it) of the raw-pixel embedding."""
    return evaluate_ijb(ijb_dir, target, pixel_embed, progress=False, model={"format": "raw pixels"})
