"""Fetch a dataset from an http(s) or file URL: resumable, sha256-checked, unpacked, published atomically.

Each dataset has its own cache folder (default `OUT_DIR/../.downloads/OUT_NAME/`), holding only the
current URL's file, named `KEY-NAME` (KEY from the URL). The archive is downloaded to `KEY-NAME.part`
(resumed with an HTTP Range request after an interruption), checked (sha256, else the announced
length) and renamed to `KEY-NAME`; a download that can be checked neither way is used once, never
kept as complete. It is unpacked with `faceflow.data.archive` (checked member by member, capped) into a
temporary directory next to OUT_DIR, and its dataset root renamed onto OUT_DIR. Any failure leaves
OUT_DIR untouched: never a partial dataset.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, NamedTuple

from tqdm import tqdm

from faceflow.data.archive import Limits, is_archive, links_outside, unpack
from faceflow.data.atomic import atomic_dir
from faceflow.errors import DataFormatError, FaceflowError

CHUNK = 1 << 20
MARKER = "train.rec"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class Download(NamedTuple):
    """A fetched file and whether it was checked complete (sha256, or every announced byte arrived)."""

    path: Path
    verified: bool


def _file_name(url: str) -> str:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"


def _cache_name(url: str) -> str:
    """`KEY-NAME`: the URL's file name behind a key of the whole URL (a new URL never resumes an old file)."""
    return f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{_file_name(url)}"


def _copy_stream(source: BinaryIO, target: BinaryIO, total: int | None, start: int, label: str) -> int:
    """Copy `source` to `target` with a tqdm bar; returns bytes copied."""
    copied = 0
    with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
              disable=None, leave=False) as bar:
        for block in iter(lambda: source.read(CHUNK), b""):
            try:
                target.write(block)
                target.flush()
            except OSError as err:
                raise FaceflowError(f"{target.name}: cannot write the download: {err.strerror or err}") from None
            copied += len(block)
            bar.update(len(block))
    return copied


def _fetch_file(path: Path, part: Path, label: str) -> bool:
    """Copy a local file into `part`, resuming after the bytes already there; True (its size is known)."""
    if not path.is_file():
        raise FaceflowError(f"{path}: no such file (file URL)")
    size = path.stat().st_size
    start = part.stat().st_size if part.exists() else 0
    if start > size:
        part.unlink()
        start = 0
    with open(path, "rb") as source, open(part, "ab") as target:
        source.seek(start)
        _copy_stream(source, target, size, start, label)
    return True


def _fetch_http(url: str, part: Path, label: str, timeout: float) -> bool:
    """Download `url` into `part`; continue with a Range request when `part` already holds a prefix.

    True when the download is known complete (the announced length arrived, or the server says the
    part already holds every byte); False when the server announced no length."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "faceflow-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            return True  # the part file already holds every byte
        raise FaceflowError(f"{url}: HTTP {err.code} {err.reason}") from None
    with response:
        if start and response.status != 206:
            start = 0  # server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        mode = "ab" if start else "wb"
        with open(part, mode) as target:
            copied = _copy_stream(response, target, total, start, label)
    if total is not None and start + copied < total:
        raise FaceflowError(f"{url}: download interrupted at byte {start + copied} of {total}; rerun to resume")
    return total is not None


def _forget_other_urls(cache_dir: Path, url: str) -> None:
    """Remove the files a dataset's own cache folder holds for URLs other than `url` (an old mirror's)."""
    name = _cache_name(url)
    for entry in cache_dir.iterdir() if cache_dir.is_dir() else ():
        if entry.is_file() and entry.name not in (name, name + ".part"):
            entry.unlink()


def fetch(url: str, cache_dir: str | Path, sha256: str | None = None, timeout: float = 30.0) -> Download:
    """Download `url` into `cache_dir` (resuming a previous partial download) and check it: its sha256 when
    given, else that every announced byte arrived. Unverifiable downloads stay `KEY-NAME.part`."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise FaceflowError(f"{url}: unsupported URL scheme {parsed.scheme!r} (http, https or file)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / _cache_name(url)
    part = final.with_name(final.name + ".part")
    if final.is_file() and (sha256 is None or sha256_of(final) == sha256.lower()):
        return Download(final, True)
    label = final.name
    try:
        if parsed.scheme == "file":
            complete = _fetch_file(Path(urllib.parse.unquote(parsed.path)), part, label)
        else:
            complete = _fetch_http(url, part, label, timeout)
    except http.client.IncompleteRead as err:
        raise FaceflowError(
            f"{url}: download interrupted after {len(err.partial)} more bytes; rerun to resume ({part})"
        ) from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        kept = f" (partial download kept in {part} for resuming)" if part.exists() and part.stat().st_size else ""
        raise FaceflowError(
            f"{url}: cannot download ({reason}); no network? download it elsewhere and use a file:// URL "
            f"or a local `path:`{kept}"
        ) from None
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink()
            raise DataFormatError(f"{url}: sha256 mismatch (expected {sha256.lower()}, got {actual}); download removed")
    elif not complete:
        return Download(part, False)
    os.replace(part, final)
    return Download(final, True)


def _dataset_root(unpacked: Path) -> Path:
    """The directory holding train.rec (shallowest), else a lone top-level directory, else `unpacked`."""
    found = sorted(unpacked.rglob(MARKER), key=lambda p: len(p.parts))
    if found:
        return found[0].parent
    children = list(unpacked.iterdir())
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        return children[0]
    return unpacked


def _publish_archive(download: Download, url: str, out_dir: Path, staging: Path, limits: Limits) -> None:
    """Unpack the archive (or copy the plain file) into a temporary folder next to `out_dir` and move its
    dataset root's entries into `staging`, refusing links that would point outside once re-rooted."""
    archive = download.path
    unpacked = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".unpack.tmp", dir=out_dir.parent))
    try:
        if is_archive(archive):
            try:
                unpack(archive, unpacked, limits)
            except DataFormatError as err:
                if download.verified:
                    raise
                raise DataFormatError(f"{err} (the download may be cut short: {url} announced no length "
                                      f"and no sha256 was given)") from None
        else:
            shutil.copy2(archive, unpacked / _file_name(url))
        root = _dataset_root(unpacked)
        escaping = links_outside(root)
        if escaping is not None:
            raise DataFormatError(f"{archive}: member {escaping!r}: link to outside the dataset folder "
                                  f"{root.relative_to(unpacked)}/; nothing unpacked")
        for child in list(root.iterdir()):
            os.replace(child, staging / child.name)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def default_cache_dir(out_dir: Path) -> Path:
    """`OUT_DIR/../.downloads/OUT_NAME`: one cache folder per dataset."""
    return out_dir.parent / ".downloads" / out_dir.name


def download_dataset(url: str, out_dir: str | Path, sha256: str | None = None,
                     cache_dir: str | Path | None = None, timeout: float = 30.0,
                     limits: Limits = Limits()) -> Download:
    """Fetch `url`, unpack it (checked, within `limits`) and publish the dataset directory as `out_dir` in one
    rename. Returns the fetched file (a local directory URL: that directory, verified)."""
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out_dir)
    if cache_dir is None:
        _forget_other_urls(cache, url)
    parsed = urllib.parse.urlparse(url)
    source_dir = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None
    with atomic_dir(out_dir) as staging:
        if source_dir is not None and source_dir.is_dir():
            _copying(source_dir, out_dir, lambda: shutil.copytree(source_dir, staging, dirs_exist_ok=True))
            return Download(source_dir, True)
        download = fetch(url, cache, sha256, timeout)
        try:
            _copying(download.path, out_dir, lambda: _publish_archive(download, url, out_dir, staging, limits))
        finally:
            if not download.verified:
                download.path.unlink(missing_ok=True)  # never resumed as if complete
    return download


def _copying(source: Path, out_dir: Path, action: Callable[[], object]) -> None:
    """Run a copy into `out_dir`'s staging folder; a failed write (disk full) is one line naming both."""
    try:
        action()
    except (OSError, shutil.Error) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise FaceflowError(f"{out_dir}: cannot copy {source} into it: {reason}") from None
