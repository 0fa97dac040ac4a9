"""The `.idx` of an indexed RecordIO file (`key\\toffset` lines) as two compact int64 arrays.

Datasets hold millions of records, so the index is never a dict of Python ints: `RecordIndex` keeps
keys and offsets in file order (16 bytes a record), looks keys up by subtraction when they are
consecutive (the usual case) or through a sort order otherwise, and is read and written in blocks.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from faceflow.data.atomic import atomic_file
from faceflow.errors import DataFormatError

_BLOCK = 1 << 24  # bytes of `.idx` text parsed at once
_WRITE_ROWS = 1 << 18  # lines formatted at once
_CHECK_ROWS = 1 << 20  # keys checked for consecutiveness at once
_INT64 = np.iinfo(np.int64)
_POWERS_OF_TEN = 10 ** np.arange(1, 19, dtype=np.int64)


def _consecutive(keys: np.ndarray) -> bool:
    """True when keys[i] == keys[0] + i for all i (checked a block at a time: no full-size temporary)."""
    if int(keys[-1]) - int(keys[0]) != len(keys) - 1:
        return False
    return all(bool((np.diff(keys[lo:lo + _CHECK_ROWS + 1]) == 1).all()) for lo in range(0, len(keys), _CHECK_ROWS))


class RecordIndex:
    """key -> byte offset of every record listed by an index, in listing order."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, source: Path | None = None):
        self.keys = np.ascontiguousarray(keys, np.int64)
        self.offsets = np.ascontiguousarray(offsets, np.int64)
        self.source = source
        n = len(self.keys)
        self._base: int | None = None
        self._order: np.ndarray | None = None
        if n and _consecutive(self.keys):
            self._base = int(self.keys[0])
        elif n:
            order = np.argsort(self.keys, kind="stable")
            self._order = order.astype(np.int32) if n < 1 << 31 else order
            del order
            sorted_keys = self.keys[self._order]
            repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
            if repeated.size:
                where = f"{source}: " if source is not None else ""
                raise DataFormatError(f"{where}key {int(sorted_keys[repeated[0]])} is listed twice")

    @classmethod
    def from_mapping(cls, index: Mapping[int, int]) -> "RecordIndex":
        """A RecordIndex of a small key -> offset mapping (tests, hand-made indexes)."""
        return cls(np.fromiter(index.keys(), np.int64, len(index)), np.fromiter(index.values(), np.int64, len(index)))

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, keys: np.ndarray) -> np.ndarray:
        """Listing positions of `keys` (-1 for a key not in the index)."""
        keys = np.asarray(keys, np.int64)
        if self._base is not None:
            at = keys - self._base
            return np.where((at >= 0) & (at < len(self.keys)), at, -1)
        if self._order is None:
            return np.full(keys.shape, -1, np.int64)
        found = np.searchsorted(self.keys, keys, sorter=self._order)
        found = np.minimum(found, len(self.keys) - 1)
        at = self._order[found].astype(np.int64)
        return np.where(self.keys[at] == keys, at, -1)

    def offsets_of(self, keys: np.ndarray) -> np.ndarray:
        """Offsets of `keys` (KeyError naming the first key not in the index)."""
        at = self.positions(keys)
        missing = np.flatnonzero(at < 0)
        if missing.size:
            raise KeyError(int(np.asarray(keys).reshape(-1)[missing[0]]))
        return self.offsets[at]

    def offset(self, key: int) -> int | None:
        """Offset of one key, or None when it is not in the index (no array built: this runs per record)."""
        if self._base is not None:
            at = int(key) - self._base
            return int(self.offsets[at]) if 0 <= at < len(self.keys) else None
        at = int(self.positions(np.array([key]))[0])
        return int(self.offsets[at]) if at >= 0 else None

    @property
    def ascending(self) -> bool:
        """True when offsets grow with the listing order (a file read front to back)."""
        return bool(np.all(self.offsets[1:] > self.offsets[:-1]))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (int, np.integer)) and self.offset(int(key)) is not None

    def __getitem__(self, key: int) -> int:
        offset = self.offset(key)
        if offset is None:
            raise KeyError(key)
        return offset

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys.tolist())

    def items(self) -> Iterator[tuple[int, int]]:
        """(key, offset) pairs in listing order."""
        return zip(self.keys.tolist(), self.offsets.tolist())


def _parse_block(block: bytes) -> np.ndarray | None:
    """The integers of a block of well-formed `key\\toffset\\n` lines, or None (then parse it exactly)."""
    lines = block.count(b"\n")
    if block.count(b"\t") != lines:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (instead of raising) on text it cannot parse
        try:
            numbers = np.fromstring(block, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if numbers.size != 2 * lines or ((numbers == _INT64.max) | (numbers == _INT64.min)).any():  # saturated
        return None
    return numbers


def _parse_exactly(block: bytes, path: Path, first_line: int) -> np.ndarray:
    """The integers of a block, line by line: the first bad line raises a one-line error naming it."""
    numbers = []
    for lineno, line in enumerate(block.split(b"\n"), first_line):
        if not line.strip():
            continue
        fields = line.split(b"\t")
        try:
            key, offset = int(fields[0]), int(fields[1])
            if len(fields) > 2 or not (_INT64.min < key < _INT64.max and _INT64.min < offset < _INT64.max):
                raise ValueError
        except (ValueError, IndexError):
            shown = line[:60].decode("utf-8", "replace")
            raise DataFormatError(f"{path}: line {lineno}: expected 'key<TAB>offset', got {shown!r}") from None
        numbers += (key, offset)
    return np.array(numbers, np.int64)


def read_index(idx_path: str | Path) -> RecordIndex:
    """Parse a `.idx` file in blocks into a RecordIndex (one-line errors name the bad line)."""
    idx_path = Path(idx_path)
    try:
        handle = open(idx_path, "rb")
    except FileNotFoundError:
        raise DataFormatError(
            f"{idx_path}: index missing (rebuild it with `faceflow index {idx_path.parent}`)") from None
    except OSError as err:
        raise DataFormatError(f"{idx_path}: cannot read: {err.strerror}") from None
    with handle:
        lines = sum(block.count(b"\n") for block in iter(lambda: handle.read(_BLOCK), b"")) + 1
        handle.seek(0)
        keys, offsets = np.empty(lines, np.int64), np.empty(lines, np.int64)
        filled, line, rest = 0, 1, b""
        for block in iter(lambda: handle.read(_BLOCK), b""):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            block, rest = block[:cut], block[cut:]
            parsed = _parse_block(block)
            if parsed is None:
                parsed = _parse_exactly(block, idx_path, line)
            count = parsed.size // 2
            keys[filled:filled + count], offsets[filled:filled + count] = parsed[0::2], parsed[1::2]
            filled += count
            line += block.count(b"\n")
        if rest.strip():
            parsed = _parse_exactly(rest, idx_path, line)
            keys[filled:filled + 1], offsets[filled:filled + 1] = parsed[0::2], parsed[1::2]
            filled += parsed.size // 2
    return RecordIndex(keys[:filled], offsets[:filled], idx_path)


def _decimal(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ASCII digits of non-negative int64 values as (rows, widest) uint8 right-aligned, and their widths."""
    widths = np.searchsorted(_POWERS_OF_TEN, values, side="right") + 1
    rest = values.astype(np.uint32) if values.max() < 1 << 32 else values.copy()  # 32-bit division is faster
    digits = np.empty((len(values), int(widths.max())), np.uint8)
    for column in range(digits.shape[1] - 1, -1, -1):
        quotient = rest // 10
        digits[:, column] = rest - quotient * 10
        rest = quotient
    digits += ord("0")
    return digits, widths


def _lines(keys: np.ndarray, offsets: np.ndarray) -> bytes:
    """`key\toffset\n` lines of non-negative keys and offsets, formatted with numpy."""
    key_digits, key_widths = _decimal(keys)
    offset_digits, offset_widths = _decimal(offsets)
    kc, oc = key_digits.shape[1], offset_digits.shape[1]
    rows = np.empty((len(keys), kc + oc + 2), np.uint8)
    rows[:, :kc], rows[:, kc], rows[:, kc + 1:-1], rows[:, -1] = key_digits, ord("\t"), offset_digits, ord("\n")
    column = np.arange(rows.shape[1])
    keep = (column >= kc - key_widths[:, None]) & ((column <= kc) | (column >= kc + 1 + oc - offset_widths[:, None]))
    return rows[keep].tobytes()


def write_index(idx_path: str | Path, index: RecordIndex | Mapping[int, int]) -> None:
    """Write a `.idx` file atomically, formatted in blocks."""
    if not isinstance(index, RecordIndex):
        index = RecordIndex.from_mapping(index)
    with atomic_file(idx_path) as tmp:
        with open(tmp, "wb") as out:
            for lo in range(0, len(index), _WRITE_ROWS):
                keys, offsets = index.keys[lo:lo + _WRITE_ROWS], index.offsets[lo:lo + _WRITE_ROWS]
                if (keys < 0).any() or (offsets < 0).any():
                    out.write("".join(f"{k}\t{v}\n" for k, v in zip(keys.tolist(), offsets.tolist())).encode())
                else:
                    out.write(_lines(keys, offsets))
