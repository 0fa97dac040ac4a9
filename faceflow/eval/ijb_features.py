"""IJB image and template features, as arcface_torch's eval_ijbc computes them (REFERENCE section 11).

image feature = emb(aligned crop) + emb(its horizontal flip), times the detector score (norm kept);
template feature = sum over the template's media of the mean feature within each media, L2-normalised.
`embed` is any callable mapping a float32 NCHW RGB batch normalised as (x - 127.5) / 127.5 to raw
embeddings (N, D), such as `faceflow.eval.engine.open_embedder(...)`.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import numpy as np
from sklearn.preprocessing import normalize
from tqdm import tqdm

from faceflow.align.similarity import norm_crop
from faceflow.data.image_bytes import decode_rgb
from faceflow.errors import DataFormatError
from faceflow.eval.embedding import flipped, normalize_batch
from faceflow.eval.ijb_layout import IJBLayout

Embed = Callable[[np.ndarray], np.ndarray]


def aligned_crop(layout: IJBLayout, index: int) -> np.ndarray:
    """Image `index` of the layout aligned by its landmarks: uint8 RGB 3 x 112 x 112."""
    path = layout.images[index]
    source = f"{path} (line {layout.landmark_lines[index]} of {layout.landmarks_path.name})"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataFormatError(f"{source}: cannot read ({type(err).__name__}: {err.strerror or err})") from None
    return norm_crop(decode_rgb(data, source), layout.landmarks[index], source).transpose(2, 0, 1)


def _aligned_batches(layout: IJBLayout, batch_size: int, threads: int) -> Iterator[np.ndarray]:
    """uint8 NCHW batches of aligned crops in layout order; decoding runs one batch ahead in `threads` threads."""
    starts = range(0, len(layout.images), batch_size)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        def load(start: int) -> np.ndarray:
            indices = range(start, min(start + batch_size, len(layout.images)))
            return np.stack(list(pool.map(lambda i: aligned_crop(layout, i), indices)))

        with ThreadPoolExecutor(1) as ahead:
            pending = None
            for start in starts:
                current = pending.result() if pending is not None else load(start)
                following = start + batch_size
                pending = ahead.submit(load, following) if following < len(layout.images) else None
                yield current


def flip_sum_features(embed: Embed, images: np.ndarray) -> np.ndarray:
    """emb(images) + emb(flipped images) for a uint8 NCHW batch (float32, N x D)."""
    batch = normalize_batch(images)
    return np.asarray(embed(batch), np.float32) + np.asarray(embed(flipped(batch)), np.float32)


def image_features(layout: IJBLayout, embed: Embed, batch_size: int = 128, threads: int = 2,
                   progress: bool = True) -> np.ndarray:
    """Flip-summed embeddings (N x D float32) of every image of the layout, in its order."""
    out: list[np.ndarray] = []
    with tqdm(total=len(layout.images), unit="img", desc=f"{layout.target} embed", disable=not progress,
              mininterval=1.0) as bar:
        for images in _aligned_batches(layout, batch_size, threads):
            out.append(flip_sum_features(embed, images))
            bar.update(len(images))
    return np.concatenate(out)


def _group_sums(values: np.ndarray, groups: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group 0..count-1: the float64 sum of its rows of `values` and its row count (sorted reduceat)."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sums = np.add.reduceat(np.asarray(values, np.float64)[order], starts, axis=0)
    return sums, np.diff(np.r_[starts, len(groups)])


def template_features(features: np.ndarray, scores: np.ndarray, templates: np.ndarray,
                      medias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique template ids, their L2-normalised features float64) from flip-summed image features."""
    weighted = np.asarray(features, np.float64) * np.asarray(scores, np.float64)[:, None]
    media_keys, media_of_image = np.unique(np.stack([templates, medias], axis=1), axis=0, return_inverse=True)
    media_sums, media_counts = _group_sums(weighted, media_of_image.reshape(-1), len(media_keys))
    unique, template_of_media = np.unique(media_keys[:, 0], return_inverse=True)
    summed, _ = _group_sums(media_sums / media_counts[:, None], template_of_media.reshape(-1), len(unique))
    return unique, normalize(summed)


def template_rows(unique: np.ndarray, wanted: Sequence[int] | np.ndarray) -> np.ndarray:
    """Row of each wanted template id in `unique` (sorted); the reader has checked that every id is there."""
    return np.searchsorted(unique, np.asarray(wanted, np.int64))
