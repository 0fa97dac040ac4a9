"""Cheap checks, decoding and re-encoding of encoded images (JPEG passes through unchanged).

The JPEG check is structural (SOI marker at the start, EOI at the end), cheap enough to run on
every record of a large conversion; other formats are fully decoded with PIL.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceflow.errors import DataFormatError

JPEG_SOI = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"


def is_jpeg(data: bytes) -> bool:
    """True when `data` starts with a JPEG SOI marker."""
    return data[:3] == JPEG_SOI


def image_problem(data: bytes) -> str | None:
    """Why `data` is not a decodable image (empty, truncated JPEG, unknown format), or None."""
    if not data:
        return "empty image"
    if is_jpeg(data):
        if not data.rstrip(b"\0").endswith(JPEG_EOI):
            return "truncated JPEG (no end-of-image marker)"
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError:
        return "undecodable image (not a format PIL can read)"
    except Exception as err:  # PIL raises several types for corrupt data
        return f"undecodable image ({type(err).__name__}: {str(err)[:60]})"
    return None


def to_jpeg(data: bytes, quality: int = 95, reencode: bool = False) -> bytes:
    """`data` unchanged when it is a JPEG (unless `reencode`), else decoded and re-encoded as an RGB JPEG."""
    if is_jpeg(data) and not reencode:
        return data
    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.convert("RGB").save(out, "JPEG", quality=quality)
        return out.getvalue()


def image_size_of_bytes(data: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image, from its header."""
    with Image.open(io.BytesIO(data)) as im:
        return im.height, im.width


def decode_rgb(data: bytes, source: str) -> np.ndarray:
    """An encoded image as H x W x 3 uint8 RGB, turned upright by its EXIF orientation (as OpenCV's imread
    does); DataFormatError naming `source` when it cannot be decoded."""
    problem = image_problem(data)
    if problem is None:
        try:
            with Image.open(io.BytesIO(data)) as im:
                return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        except Exception as err:  # PIL raises several types for corrupt data
            problem = f"undecodable image ({type(err).__name__}: {str(err)[:60]})"
    raise DataFormatError(f"{source}: {problem}")
