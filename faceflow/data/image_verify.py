"""Full decode checks of training images: would OneFlow's training decoder read this image?

OneFlow's `OFRecordImageDecoder` decodes with libjpeg-turbo and ends the process on anything it cannot
read (libjpeg's error exit, a failed CHECK, or worse): non-JPEG bytes, corrupt headers or entropy data,
CMYK/YCCK JPEGs, images smaller than the training crop. `training_image_problem` rejects all of these
and more: it decodes with simplejpeg (libjpeg-turbo) in strict mode, so libjpeg's "corrupt data"
warnings, which OneFlow passes over with grey blocks, count as errors too. The decode is scaled to 1/8
(the whole entropy-coded stream is still read, where corruption shows) to keep the check cheap.
`ImageChecker` runs such checks on a thread pool over the CPUs this process may use: libjpeg-turbo
releases the GIL while it decodes.
"""
from __future__ import annotations

import collections
import io
import os
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from types import TracebackType
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from faceflow.data.image_bytes import JPEG_SOI

MAX_PIXELS = 1 << 26  # 64 Mpixel: far above any face crop, and below the decoder's buffer of many GB
_UNCONVERTIBLE = ("CMYK", "YCCK")  # OneFlow's RGB decode of these corrupts its memory

T = TypeVar("T")
R = TypeVar("R")


def _format_name(data: bytes | memoryview) -> str:
    """'PNG image', 'BMP image', ... or 'not an image' (PIL's identification, header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(bytes(data))) as im:
            return f"{im.format} image"
    except (UnidentifiedImageError, OSError, ValueError):
        return "not an image"


def training_image_problem(data: bytes | memoryview, min_size: tuple[int, int] = (0, 0)) -> str | None:
    """Why OneFlow's training decoder cannot read `data` (or crop `min_size` = (height, width) from it), or None."""
    import simplejpeg

    if len(data) == 0:
        return "empty image"
    if bytes(data[:3]) != JPEG_SOI:
        return f"{_format_name(data)}, not a JPEG (OneFlow's training decoder reads JPEG only)"
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as err:
        return f"corrupt JPEG header ({err})"
    if colorspace in _UNCONVERTIBLE:
        return f"{colorspace} JPEG (OneFlow's training decoder cannot convert it to RGB)"
    if height * width > MAX_PIXELS:
        return f"JPEG of {width}x{height} pixels (more than {MAX_PIXELS} pixels)"
    if height < min_size[0] or width < min_size[1]:
        return f"image is {width}x{height}, smaller than the {min_size[1]}x{min_size[0]} training crop"
    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True, min_height=1, min_width=1,
                               strict=True)
    except ValueError as err:
        return f"corrupt JPEG ({err})"
    return None


def needs_rgb_reencode(data: bytes | memoryview) -> bool:
    """True for a JPEG that decodes but not to RGB in OneFlow (CMYK, YCCK): re-encoding makes it usable."""
    import simplejpeg

    try:
        return simplejpeg.decode_jpeg_header(data)[2] in _UNCONVERTIBLE
    except ValueError:
        return False


def usable_cpus() -> int:
    """Number of CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


class ImageChecker:
    """A thread pool over the usable CPUs for image checks; `with ImageChecker() as checker: ...`.

    One worker runs everything in the calling thread (no pool).
    """

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or usable_cpus())
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="faceflow-images") if self.workers > 1 else None

    def __enter__(self) -> "ImageChecker":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def problems(self, images: Sequence[bytes | memoryview], min_size: tuple[int, int] = (0, 0)) -> list[str | None]:
        """`training_image_problem` of every image, in order, decoded in parallel (a few slices per worker)."""
        if self._pool is None or len(images) < 2:
            return [training_image_problem(image, min_size) for image in images]
        step = -(-len(images) // (4 * self.workers))
        slices = [images[i:i + step] for i in range(0, len(images), step)]
        results = self._pool.map(lambda part: [training_image_problem(image, min_size) for image in part], slices)
        return [problem for part in results for problem in part]

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """fn over items in order, in parallel with a bounded look-ahead (for streams too long to queue whole)."""
        if self._pool is None:
            yield from map(fn, items)
            return
        it = iter(items)
        pending = collections.deque(self._pool.submit(fn, item) for item in islice(it, 8 * self.workers))
        while pending:
            head = pending.popleft()
            pending.extend(self._pool.submit(fn, item) for item in islice(it, 1))
            yield head.result()
