"""Write files and directories under a temporary name in the same directory, then rename them.

A reader never sees a half-written output that looks complete: on error the temporary is removed.
A write that fails for lack of space (disk full, quota, file size limit, read-only file system), in
the block or in the rename, becomes a one-line FaceflowError naming the output.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from faceflow.errors import FaceflowError

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _no_room_named(path: Path) -> Iterator[None]:
    """Turn an OSError meaning "no room to write" into a one-line FaceflowError naming `path`."""
    try:
        yield
    except OSError as err:
        if err.errno in _NO_ROOM:
            inner = f" ({Path(err.filename).name})" if err.filename else ""
            raise FaceflowError(f"{path}{inner}: cannot write: {err.strerror}; nothing written") from None
        raise


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success `os.replace` it onto `path`."""
    path = Path(path)
    with _no_room_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())
        try:
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


@contextlib.contextmanager
def atomic_files(folder: str | Path, names: tuple[str, ...]) -> Iterator[Path]:
    """Yield a staging directory in `folder` for the files `names`; on success they replace those in `folder`.

    For outputs that share a folder with files faceflow does not own (so the folder cannot be swapped whole):
    the old files go first, the last name first, and the new ones arrive with the last name last, so until
    the last one is in place the set never looks complete.
    """
    folder = Path(folder)
    with _no_room_named(folder):
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{names[-1]}.", suffix=".tmp", dir=folder))
        try:
            yield staging
            missing = [name for name in names if not (staging / name).is_file()]
            if missing:
                raise FaceflowError(f"{folder}: {missing[0]} was not written; nothing replaced")
            for name in reversed(names):
                (folder / name).unlink(missing_ok=True)
            for name in names:
                os.replace(staging / name, folder / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def is_leftover_temporary(path: Path, name_prefix: str = "") -> bool:
    """True for a temporary file or directory `atomic_file`/`atomic_dir` left behind when its writer was killed
    (names `.{name}.XXXX.tmp` / `.old`), optionally only those of targets whose name starts with `name_prefix`."""
    return path.name.startswith(f".{name_prefix}") and path.name.endswith((".tmp", ".old"))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; on success it replaces `path` (old contents removed)."""
    path = Path(path)
    with _no_room_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp_path, 0o777 & ~_umask())
        try:
            yield tmp_path
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.replace(path, old / "content")
                os.replace(tmp_path, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                shutil.rmtree(tmp_path, ignore_errors=True)
