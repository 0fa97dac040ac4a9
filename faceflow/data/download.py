"""Fetch a dataset from an http(s) or file URL: resumable, sha256-checked, unpacked, published atomically.

The archive is downloaded to `CACHE/NAME.part` (resumed with an HTTP Range request after an
interruption), checked, renamed to `CACHE/NAME`, unpacked into a temporary directory next to
OUT_DIR and renamed onto OUT_DIR. Any failure leaves OUT_DIR untouched: never a partial dataset.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

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


def _archive_name(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return name or "download"


def _copy_stream(source: BinaryIO, target: BinaryIO, total: int | None, start: int, label: str) -> int:
    """Copy `source` to `target` with a tqdm bar; returns bytes copied."""
    copied = 0
    with tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
              disable=None, leave=False) as bar:
        for block in iter(lambda: source.read(CHUNK), b""):
            target.write(block)
            copied += len(block)
            bar.update(len(block))
    return copied


def _fetch_file(path: Path, part: Path, label: str) -> None:
    """Copy a local file into `part`, resuming after the bytes already there."""
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


def _fetch_http(url: str, part: Path, label: str, timeout: float) -> None:
    """Download `url` into `part`; continue with a Range request when `part` already holds a prefix."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "faceflow-download"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            return  # the part file already holds every byte
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


def fetch(url: str, cache_dir: str | Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Download `url` into `cache_dir` (resuming a previous partial download) and check its sha256."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise FaceflowError(f"{url}: unsupported URL scheme {parsed.scheme!r} (http, https or file)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / _archive_name(url)
    part = final.with_name(final.name + ".part")
    if final.is_file() and (sha256 is None or sha256_of(final) == sha256.lower()):
        return final
    label = final.name
    try:
        if parsed.scheme == "file":
            _fetch_file(Path(urllib.parse.unquote(parsed.path)), part, label)
        else:
            _fetch_http(url, part, label, timeout)
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
    os.replace(part, final)
    return final


def _dataset_root(unpacked: Path) -> Path:
    """The directory holding train.rec (shallowest), else a lone top-level directory, else `unpacked`."""
    found = sorted(unpacked.rglob(MARKER), key=lambda p: len(p.parts))
    if found:
        return found[0].parent
    children = list(unpacked.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return unpacked


def _unpack(archive: Path, target: Path) -> None:
    """Extract a zip or tar archive (tar with the safe `data` filter), or copy a plain file."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                resolved = (target / member).resolve()
                if not str(resolved).startswith(str(target.resolve())):
                    raise DataFormatError(f"{archive}: member {member!r} escapes the archive")
            bundle.extractall(target)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            bundle.extractall(target, filter="data")
    else:
        shutil.copy2(archive, target / archive.name)


def download_dataset(url: str, out_dir: str | Path, sha256: str | None = None,
                     cache_dir: str | Path | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url`, unpack it and publish the dataset directory as `out_dir` in one rename."""
    out_dir = Path(out_dir)
    cache = Path(cache_dir) if cache_dir is not None else out_dir.parent / ".downloads"
    parsed = urllib.parse.urlparse(url)
    source_dir = Path(urllib.parse.unquote(parsed.path)) if parsed.scheme == "file" else None
    with atomic_dir(out_dir) as staging:
        if source_dir is not None and source_dir.is_dir():
            shutil.copytree(source_dir, staging, dirs_exist_ok=True)
            return out_dir
        archive = fetch(url, cache, sha256, timeout)
        unpacked = staging / ".unpacked"
        unpacked.mkdir()
        try:
            _unpack(archive, unpacked)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError) as err:
            raise DataFormatError(f"{archive}: cannot unpack ({err})") from None
        root = _dataset_root(unpacked)
        for child in list(root.iterdir()):
            os.replace(child, staging / child.name)
        shutil.rmtree(unpacked)
    return out_dir
