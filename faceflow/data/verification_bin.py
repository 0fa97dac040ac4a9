"""Verification `.bin` files (LFW / CFP-FP / AgeDB-30): a pickle of `(bins, issame_list)`.

`bins` holds 2N encoded images (consecutive pairs), `issame_list` N booleans. Python 2 pickles
are read with the `encoding='bytes'` fallback.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from faceflow.data.atomic import atomic_file
from faceflow.errors import DataFormatError


def _as_bytes(item: object, path: Path, index: int) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item.tobytes()
    raise DataFormatError(f"{path}: image {index}: expected encoded image bytes, got {type(item).__name__}")


def read_bin(path: str | Path) -> tuple[list[bytes], np.ndarray]:
    """Encoded images and the per-pair `issame` bool array of a verification `.bin` (validated)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{path}: cannot read: {err.strerror}") from None
    try:
        try:
            obj = pickle.loads(raw)
        except UnicodeDecodeError:
            obj = pickle.loads(raw, encoding="bytes")
    except Exception as err:  # pickle raises many types on corrupt input
        raise DataFormatError(
            f"{path}: byte offset 0: not a verification pickle ({type(err).__name__}: {err})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataFormatError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    bins, issame = obj
    images = [_as_bytes(item, path, i) for i, item in enumerate(bins)]
    flags = np.asarray(list(issame), dtype=bool)
    if len(images) % 2:
        raise DataFormatError(f"{path}: odd image count {len(images)} (images come in pairs)")
    if len(images) != 2 * len(flags):
        raise DataFormatError(f"{path}: issame_list has {len(flags)} entries but there are {len(images)} images "
                              f"({len(images) // 2} pairs)")
    return images, flags


def write_bin(path: str | Path, images: Sequence[bytes], issame: Sequence[bool]) -> None:
    """Write a verification `.bin` atomically (rejects odd image counts and mismatched issame)."""
    images = [bytes(im) for im in images]
    flags = [bool(x) for x in issame]
    if len(images) % 2 or len(images) != 2 * len(flags):
        raise ValueError(f"{len(images)} images do not make {len(flags)} pairs")
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump((images, flags), f, protocol=4)
