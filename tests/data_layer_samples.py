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


def unreadable_jpegs(size: int = 16) -> dict[str, bytes]:
    """Images OneFlow's training decoder cannot read, by kind; all but `raw_truncated` and `png` keep the JPEG
    start and end markers, so a structural check passes them.

    corrupt_body: an unknown marker in the header (OneFlow: 'Unsupported marker type 0x13', process ends);
    garbage: start marker, random bytes, end marker; truncated: an image cut inside its entropy-coded data, end marker put back
    (libjpeg warns and fills grey: flagged as corrupt data); raw_truncated: the same cut without the end marker; cmyk: a CMYK JPEG
    (OneFlow's RGB decode corrupts its heap); png: not a JPEG; small: 8 pixels smaller than `size` (OneFlow's
    crop CHECK aborts).
    """
    good = jpeg(0, size)
    out = io.BytesIO()
    Image.new("CMYK", (size, size), (10, 20, 30, 40)).save(out, "JPEG")
    png = io.BytesIO()
    Image.fromarray(pixels(1, size)).save(png, "PNG")
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    cut = (good.find(b"\xff\xda") + len(good)) // 2  # inside the entropy-coded data
    return {"corrupt_body": good[:20] + b"\xff\x13" + good[22:],
            "garbage": b"\xff\xd8\xff" + noise + b"\xff\xd9",
            "truncated": good[:cut] + b"\xff\xd9",
            "raw_truncated": good[:cut],
            "cmyk": out.getvalue(),
            "png": png.getvalue(),
            "small": jpeg(2, size - 8)}
