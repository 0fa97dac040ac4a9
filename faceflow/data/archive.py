"""Unpack zip and tar archives from elsewhere so that nothing lands outside the target folder.

faceflow checks every member itself (tarfile's `data` filter differs between Python patch levels):
names must be relative without `..`; regular files, directories and symbolic links only (hard links,
devices and FIFOs are refused); a member's real parent directory and a link's real target must be inside
the target; no member may replace an earlier one. Caps on unpacked bytes and member count stop archive
bombs. `links_outside` re-checks the links of a subfolder that becomes the dataset root.
"""
from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from faceflow.errors import DataFormatError, FaceflowError

CHUNK = 1 << 20
DEFAULT_MAX_MEMBERS = 1_000_000
RATIO_CAP = 100  # default byte cap: this many times the archive's size ...
MIN_BYTES_CAP = 1 << 30  # ... but at least 1 GiB
_LINK_TEXT_LIMIT = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
# what tarfile, zipfile and their decompressors raise on damaged archives
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, OSError, ValueError)


@dataclass(frozen=True)
class Limits:
    """Caps on what one archive may unpack to (None: the default for that archive)."""

    max_bytes: int | None = None
    max_members: int = DEFAULT_MAX_MEMBERS

    def bytes_for(self, archive: Path) -> int:
        """The byte cap for `archive`: `max_bytes`, else RATIO_CAP times its size (at least MIN_BYTES_CAP)."""
        if self.max_bytes is not None:
            return self.max_bytes
        return max(RATIO_CAP * archive.stat().st_size, MIN_BYTES_CAP)


@dataclass
class _Member:
    """One archive entry as faceflow handles it."""

    name: str
    kind: str  # file | dir | symlink | hardlink | device
    size: int
    mode: int
    link: str = ""


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


class _Extractor:
    """Writes checked members under `root`, counting bytes and members against the caps."""

    def __init__(self, archive: Path, root: Path, limits: Limits):
        self.archive, self.root = archive, os.path.realpath(root)
        self.max_bytes, self.max_members = limits.bytes_for(archive), limits.max_members
        self.written = self.members = 0

    def refuse(self, member: _Member, why: str) -> DataFormatError:
        return DataFormatError(f"{self.archive}: member {member.name!r}: {why}; nothing unpacked")

    def target(self, member: _Member) -> str:
        """Where `member` goes: its real parent (through links already unpacked) must be inside the root."""
        name = member.name
        if not name or name.startswith(("/", "\\")) or _DRIVE.match(name) or "\0" in name:
            raise self.refuse(member, "absolute or empty name")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.refuse(member, "'..' in its name")
        if not parts:
            raise self.refuse(member, "names the archive root")
        parent = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if not _inside(parent, self.root):
            raise self.refuse(member, "its folder is a link to outside the dataset folder")
        return os.path.join(parent, parts[-1])

    def add(self, member: _Member, source: BinaryIO | None) -> None:
        """Check and write one member (`source` holds a file's bytes or a link's target)."""
        self.members += 1
        if self.members > self.max_members:
            raise DataFormatError(f"{self.archive}: more than {self.max_members} members "
                                  f"(raise the cap with --max-members); nothing unpacked")
        if member.kind in ("hardlink", "device"):
            raise self.refuse(member, f"{member.kind}s are not unpacked")
        dest = self.target(member)
        if member.kind == "dir":
            if os.path.lexists(dest) and not os.path.isdir(dest):
                raise self.refuse(member, "a folder where an earlier member is a file")
            self._write(dest, lambda: os.makedirs(dest, exist_ok=True))
            return
        if os.path.lexists(dest):
            raise self.refuse(member, "listed twice (it would replace an earlier member)")
        self._write(dest, lambda: os.makedirs(os.path.dirname(dest), exist_ok=True))
        if member.kind == "symlink":
            link = member.link
            if not link or link.startswith("/") or "\0" in link:
                raise self.refuse(member, f"link to an absolute path {link!r}")
            if not _inside(os.path.realpath(os.path.join(os.path.dirname(dest), link)), self.root):
                raise self.refuse(member, f"link to {link!r}, outside the dataset folder")
            self._write(dest, lambda: os.symlink(link, dest))
            return
        if self.written + member.size > self.max_bytes:
            raise self._too_big()
        self._write(dest, lambda: self._copy(source, dest, member.mode))

    def _too_big(self) -> DataFormatError:
        return DataFormatError(f"{self.archive}: unpacks to more than {self.max_bytes} bytes "
                               f"(raise the cap with --max-unpacked-bytes); nothing unpacked")

    def _copy(self, source: BinaryIO, dest: str, mode: int) -> None:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if mode & 0o100 else 0o644)
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: source.read(CHUNK), b""):
                self.written += len(block)
                if self.written > self.max_bytes:
                    raise self._too_big()
                out.write(block)

    def _write(self, dest: str, action: Callable[[], object]) -> None:
        try:
            action()
        except OSError as err:
            raise FaceflowError(f"{dest}: cannot write while unpacking {self.archive.name}: "
                                f"{err.strerror or err}") from None


def _tar_members(bundle: tarfile.TarFile) -> Iterator[tuple[_Member, BinaryIO | None]]:
    for info in bundle:
        if info.isreg():
            yield _Member(info.name, "file", info.size, info.mode), bundle.extractfile(info)
        elif info.isdir():
            yield _Member(info.name, "dir", 0, info.mode), None
        elif info.issym():
            yield _Member(info.name, "symlink", 0, info.mode, info.linkname), None
        elif info.islnk():
            yield _Member(info.name, "hardlink", 0, info.mode, info.linkname), None
        else:
            yield _Member(info.name, "device", 0, info.mode), None


def _zip_members(bundle: zipfile.ZipFile) -> Iterator[tuple[_Member, BinaryIO | None]]:
    for info in bundle.infolist():
        mode = info.external_attr >> 16 if info.create_system == 3 else 0  # Unix attributes
        kind = stat.S_IFMT(mode)
        if info.is_dir():
            yield _Member(info.filename, "dir", 0, mode), None
        elif kind == stat.S_IFLNK:
            with bundle.open(info) as link:
                text = link.read(_LINK_TEXT_LIMIT)
            yield _Member(info.filename, "symlink", 0, mode, text.decode("utf-8", "surrogateescape")), None
        elif kind in (0, stat.S_IFREG):
            with bundle.open(info) as source:
                yield _Member(info.filename, "file", info.file_size, mode), source
        else:
            yield _Member(info.filename, "device", 0, mode), None


def unpack(archive: Path, target: Path, limits: Limits = Limits()) -> None:
    """Unpack the zip or tar `archive` into the existing empty folder `target`, member by member, checked."""
    extractor = _Extractor(archive, target, limits)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for member, source in _zip_members(bundle):
                    extractor.add(member, source)
        else:
            with tarfile.open(archive) as bundle:
                for member, source in _tar_members(bundle):
                    extractor.add(member, source)
    except _DAMAGED as err:
        raise DataFormatError(f"{archive}: cannot unpack ({type(err).__name__}: {err})") from None


def is_archive(path: Path) -> bool:
    """True for a zip or tar (plain or compressed) file, also a damaged one (unpack then says how)."""
    try:
        return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except _DAMAGED:  # a compressed stream cut short
        return True


def links_outside(folder: Path) -> str | None:
    """The first symbolic link under `folder` whose real target is outside it, or None."""
    root = os.path.realpath(folder)
    for parent, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), root):
                return os.path.relpath(path, folder)
    return None
