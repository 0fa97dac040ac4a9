"""Tiny sample images and datasets shared by the tests/test_data_*.py files."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from faceflow.data.recordio import write_insightface_dataset


def pixels(seed: int, size: int = 16) -> np.ndarray:
    """A smooth random RGB image (uint8, size x size x 3) so JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))


def jpeg(seed: int, size: int = 16) -> bytes:
    """JPEG bytes (quality 95) of `pixels(seed, size)`."""
    out = io.BytesIO()
    Image.fromarray(pixels(seed, size)).save(out, "JPEG", quality=95)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    """PIL RGB decode as uint8 HWC."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def make_dataset(out_dir: Path, labels: list[int], num_classes: int, size: int = 16) -> list[tuple[int, bytes]]:
    """Write an InsightFace-layout dataset of one distinct JPEG per label entry; return its records."""
    records = [(label, jpeg(i, size)) for i, label in enumerate(labels)]
    write_insightface_dataset(out_dir, records, num_classes, (size, size))
    return records
