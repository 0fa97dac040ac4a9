"""MXNet indexed RecordIO (`train.rec`, `train.idx`, `property`): reader, writer and index rebuild.

Own framing code, byte-identical to dmlc/mxnet.recordio (magic escaping into continuation parts
included) but without importing mxnet, with windowed positioned reads and with the record headers
of thousands of records parsed at once with numpy over a memory map of the file
(`RecordDataset.image_chunks`), which is what makes conversion fast.
Both layouts are read: InsightFace (record 0 is a header with flag > 0) and im2rec (every key an image).
"""
from __future__ import annotations

import array
import contextlib
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from faceflow.data.atomic import atomic_file
from faceflow.data.record_index import RecordIndex, read_index, write_index
from faceflow.errors import DataFormatError, FaceflowError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")
_IR = struct.Struct("IfQQ")
_LEN_MASK = (1 << 29) - 1
REC_NAME, IDX_NAME, PROPERTY_NAME = "train.rec", "train.idx", "property"
CHUNK_RECORDS = 2048  # records per RecordDataset.image_chunks chunk (bench/convert.py: ahead of 4096, level with 1024)
_RELEASE_BYTES = 1 << 26  # image_chunks drops the pages of the map it read after about this many bytes
_SCAN_WORDS = 1 << 23  # 4-byte words of a .rec searched for frame headers at once


class IRHeader(NamedTuple):
    """Image record header, as mxnet.recordio.IRHeader: label is a float or a float32 array when flag > 0."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


@dataclass(frozen=True)
class ImageRecord:
    """One image of a dataset: its idx key, integer identity label, full label and encoded bytes."""

    key: int
    label: int
    raw_label: float | np.ndarray
    image: bytes


class ImageChunk(NamedTuple):
    """Records of a key list parsed in bulk: record i's image is `buffer[starts[i]:ends[i]]`.

    `labels` holds the float label (the first element of array labels). Records the bulk parser
    cannot vouch for (bad framing, continuation parts, cut by the end of the file) have `regular` False:
    read those with `RecordDataset.read`, which returns them or raises their error. `buffer` is a
    memory map of the whole `.rec` and `array` the same bytes as uint8.
    """

    keys: np.ndarray
    buffer: memoryview
    array: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    regular: np.ndarray


_HEAD_BYTES = np.arange(_FRAME.size + _IR.size)


def _parse_frames(data: np.ndarray, rel: np.ndarray) -> tuple[np.ndarray, ...]:
    """(starts, ends, labels, framed, regular) of the records framed at `rel` in `data`, vectorised.

    framed: magic, single-part flag and IRHeader are sound; regular: also the whole record is in `data`.
    """
    filled = len(data)
    fits = rel + _HEAD_BYTES.size <= filled
    raw = data[np.where(fits, rel, 0)[:, None] + _HEAD_BYTES] if filled >= _HEAD_BYTES.size else \
        np.zeros((len(rel), _HEAD_BYTES.size), np.uint8)
    words = np.ascontiguousarray(raw[:, :16]).view("=u4")
    magic, lrec, flag = words[:, 0], words[:, 1], words[:, 2].astype(np.int64)
    labels = words[:, 3].copy().view("=f4").astype(np.float64)
    length = (lrec & _LEN_MASK).astype(np.int64)
    ends = rel + _FRAME.size + length
    starts = rel + _HEAD_BYTES.size + 4 * flag
    framed = fits & (magic == MAGIC) & (lrec >> 29 == 0) & (length >= _IR.size) & (starts <= ends)
    regular = framed & (ends <= filled)
    array = np.flatnonzero(regular & (flag > 0))
    if array.size:
        first = data[(rel[array] + _HEAD_BYTES.size)[:, None] + np.arange(4)]
        labels[array] = first.view("=f4")[:, 0]
    return starts, ends, labels, framed, regular


def pack_payload(header: IRHeader, image: bytes = b"") -> bytes:
    """Serialize a record payload exactly as `mxnet.recordio.pack` does."""
    label = header.label
    if isinstance(label, (int, float, np.integer, np.floating)):
        return _IR.pack(0, float(label), header.id, header.id2) + image
    arr = np.asarray(label, dtype=np.float32).ravel()
    return _IR.pack(arr.size, 0.0, header.id, header.id2) + arr.tobytes() + image


def unpack_payload(payload: bytes) -> tuple[IRHeader, bytes]:
    """Split a payload into its header and image bytes, exactly as `mxnet.recordio.unpack` does."""
    if len(payload) < _IR.size:
        raise ValueError(f"payload of {len(payload)} bytes is shorter than the {_IR.size}-byte IRHeader")
    flag, label, id_, id2 = _IR.unpack_from(payload)
    if flag > 0:
        end = _IR.size + 4 * flag
        if len(payload) < end:
            raise ValueError(f"payload too short for {flag} float32 labels")
        arr = np.frombuffer(payload, np.float32, flag, _IR.size)
        return IRHeader(flag, arr, id_, id2), payload[end:]
    return IRHeader(flag, label, id_, id2), payload[_IR.size:]


def frame_record(payload: bytes) -> bytes:
    """Frame one payload as dmlc RecordIOWriter does (aligned magic words split it into parts)."""
    if len(payload) >= 1 << 29:
        raise ValueError("RecordIO records must be shorter than 2^29 bytes")
    out = []
    start = 0
    pos = payload.find(_MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            out.append(_FRAME.pack(MAGIC, (cflag << 29) | (pos - start)))
            out.append(payload[start:pos])
            start = pos + 4
            pos = payload.find(_MAGIC_BYTES, start)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start else 0
    rest = len(payload) - start
    out.append(_FRAME.pack(MAGIC, (cflag << 29) | rest))
    out.append(payload[start:])
    out.append(b"\0" * (-len(payload) % 4))
    return b"".join(out)


class RecordFile:
    """Random and sequential access to the records of one `.rec` file through positioned reads.

    Reads go through a window (a bytes buffer over part of the file): sequential access costs one
    `pread` per window. Bulk reads of many images use `RecordDataset.image_chunks`, a memory map instead.
    """

    RANDOM_WINDOW = 1 << 14
    SEQUENTIAL_WINDOW = 1 << 22

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as err:
            raise DataFormatError(f"{self.path}: cannot open: {err.strerror}") from None
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(self._fd)
            raise DataFormatError(f"{self.path}: not a regular file")
        self.size = info.st_size
        self._window_start, self._window = 0, b""

    def close(self) -> None:
        """Close the file handle."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def window(self, offset: int, need: int, ahead: int = RANDOM_WINDOW) -> tuple[bytes, int]:
        """(buffer, index of `offset` in it) holding `need` bytes from `offset` (fewer at the end of file)."""
        rel = offset - self._window_start
        if rel < 0 or rel + need > len(self._window):
            self._window, self._window_start, rel = os.pread(self._fd, max(need, ahead), offset), offset, 0
        return self._window, rel

    def read_at(self, offset: int, key: int | None = None, ahead: int = RANDOM_WINDOW) -> tuple[bytes, int]:
        """Payload of the record framed at `offset` and the offset just past it (continuations joined)."""
        where = f"key {key} at byte offset {offset}" if key is not None else f"byte offset {offset}"
        size = self.size
        if offset < 0 or offset + 8 > size:
            raise DataFormatError(f"{self.path}: {where}: offset past the end of the file ({size} bytes)")
        parts = []
        pos = offset
        while True:
            if pos + 8 > size:
                raise DataFormatError(
                    f"{self.path}: {where}: truncated record (continuation header at byte {pos} past the end)")
            buf, rel = self.window(pos, 8, ahead)
            magic, lrec = _FRAME.unpack_from(buf, rel)
            if magic != MAGIC:
                raise DataFormatError(
                    f"{self.path}: {where}: wrong magic 0x{magic:08x} at byte {pos} (expected 0x{MAGIC:08x})")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            end = pos + 8 + length
            if end > size:
                raise DataFormatError(
                    f"{self.path}: {where}: truncated record ({length} bytes announced, {size - pos - 8} left)")
            buf, rel = self.window(pos, 8 + length, ahead)
            part = buf[rel + 8:rel + 8 + length]
            if cflag == 0:
                if not parts:
                    return part, end + (-length % 4)
                parts.append(part)
                return _MAGIC_BYTES.join(parts), end + (-length % 4)
            if (cflag == 1) != (not parts):
                raise DataFormatError(f"{self.path}: {where}: bad continuation flag {cflag} at byte {pos}")
            parts.append(part)
            pos = end + (-length % 4)
            if cflag == 3:
                return _MAGIC_BYTES.join(parts), pos

    def scan(self) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, payload) of every record in file order."""
        pos = 0
        while pos < self.size:
            payload, nxt = self.read_at(pos, ahead=self.SEQUENTIAL_WINDOW)
            yield pos, payload
            pos = nxt


def read_property(data_dir: str | Path) -> tuple[int, int, int] | None:
    """`(num_classes, height, width)` from `data_dir/property`, or None when there is no property file."""
    path = Path(data_dir) / PROPERTY_NAME
    if not path.exists():
        return None
    with open(path, "rb") as handle:
        first = handle.read(256).split(b"\n", 1)[0].strip()
    shown = first[:60].decode("utf-8", "replace")
    try:
        values = [int(v) for v in first.split(b",")]
        num_classes, h, w = values[0], values[1], values[2]
    except (ValueError, IndexError):
        raise DataFormatError(f"{path}: line 1: expected 'num_classes,height,width', got {shown!r}") from None
    if not 1 <= num_classes < 1 << 31:
        raise DataFormatError(f"{path}: line 1: num_classes must be in [1, 2^31) (int32 labels), got {num_classes}")
    if not (0 < h < 1 << 16 and 0 < w < 1 << 16):
        raise DataFormatError(f"{path}: line 1: image size {h}x{w} is not a size in pixels")
    return num_classes, h, w


def write_property(data_dir: str | Path, num_classes: int, image_size: tuple[int, int]) -> None:
    """Write `property` (`num_classes,h,w`) atomically."""
    with atomic_file(Path(data_dir) / PROPERTY_NAME) as tmp:
        tmp.write_text(f"{num_classes},{image_size[0]},{image_size[1]}\n")


class RecordWriter:
    """Append records to a `.rec`/`.idx` pair under temporary names; `commit()` renames both."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path):
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self._stack = contextlib.ExitStack()  # the .rec under atomic_file's temporary name, then its file
        self._tmp_rec = self._stack.enter_context(atomic_file(self.rec_path))
        self._file = self._stack.enter_context(open(self._tmp_rec, "wb"))
        self._offset = 0
        self._keys, self._offsets = array.array("q"), array.array("q")

    def write(self, key: int, payload: bytes) -> None:
        """Append one payload under `key`."""
        framed = frame_record(payload)
        self._keys.append(key)
        self._offsets.append(self._offset)
        try:
            self._file.write(framed)
        except OSError as err:
            raise FaceflowError(f"{self.rec_path}: cannot write: {err.strerror or err}") from None
        self._offset += len(framed)

    def rewrite_start(self, framed: bytes) -> None:
        """Overwrite the first bytes of the `.rec` (a header of unchanged size), keeping the append position."""
        self._file.seek(0)
        self._file.write(framed)
        self._file.seek(0, os.SEEK_END)

    def commit(self) -> None:
        """Close and rename the `.rec` into place, then write the `.idx`."""
        self._stack.close()
        write_index(self.idx_path, RecordIndex(np.frombuffer(self._keys, np.int64),
                                               np.frombuffer(self._offsets, np.int64)))

    def abort(self) -> None:
        """Close and remove the temporary `.rec`."""
        aborted = FaceflowError(f"{self.rec_path}: write aborted")
        self._stack.__exit__(FaceflowError, aborted, None)

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_insightface_dataset(
    out_dir: str | Path,
    records: Iterable[tuple[int, bytes]],
    num_classes: int,
    image_size: tuple[int, int] = (112, 112),
) -> None:
    """Write train.rec/train.idx/property in InsightFace layout from (label, JPEG bytes) sorted by label.

    Keys: 0 = header (label = [first identity key, end]), 1..N images, then one [start, end) record per class.
    """
    out_dir = Path(out_dir)
    with RecordWriter(out_dir / REC_NAME, out_dir / IDX_NAME) as writer:
        placeholder = pack_payload(IRHeader(2, np.zeros(2, np.float32), 0, 0))
        writer.write(0, placeholder)  # same size as the real header, rewritten once the counts are known
        key = 1
        ranges = np.zeros((num_classes, 2), dtype=np.int64)
        previous = -1
        for label, image in records:
            label = int(label)
            if label < previous:
                raise ValueError(f"records must be sorted by label: label {label} after {previous}")
            if not 0 <= label < num_classes:
                raise ValueError(f"label {label} outside [0, {num_classes})")
            while previous < label:
                previous += 1
                ranges[previous] = key
            writer.write(key, pack_payload(IRHeader(0, float(label), key, 0), image))
            ranges[label, 1] = key + 1
            key += 1
        while previous < num_classes - 1:
            previous += 1
            ranges[previous] = key
        first_identity = key
        for start, end in ranges:
            writer.write(key, pack_payload(IRHeader(2, np.array([start, end], np.float32), key, 0)))
            key += 1
        header = frame_record(pack_payload(IRHeader(2, np.array([first_identity, key], np.float32), 0, 0)))
        if len(header) != len(frame_record(placeholder)):
            raise ValueError("header record changed size")
        writer.rewrite_start(header)
    write_property(out_dir, num_classes, image_size)


def is_header_record(header: IRHeader, image: bytes) -> bool:
    """True for an InsightFace header/identity record: array label [start, end) and no image."""
    return header.flag >= 2 and not image


class RecordDataset:
    """An indexed RecordIO dataset directory (InsightFace or im2rec layout) read through its `.idx`.

    Per-record metadata lives in int64 arrays (the index, `image_keys`), never in per-record Python
    objects; a header record's key range is checked against the index before anything is allocated.
    """

    def __init__(self, data_dir: str | Path, rec_name: str = REC_NAME, idx_name: str = IDX_NAME):
        self.data_dir = Path(data_dir)
        self.rec_path, self.idx_path = self.data_dir / rec_name, self.data_dir / idx_name
        if not self.rec_path.exists():
            raise DataFormatError(f"{self.rec_path}: file not found")
        self.index = read_index(self.idx_path)
        self.property = read_property(self.data_dir)
        self.rec = RecordFile(self.rec_path)
        try:
            self._check_offsets()
            self.header: IRHeader | None = None
            self.image_keys: np.ndarray = self.index.keys
            self.identity_ranges: np.ndarray | None = None  # (classes, 2) [start, end) image keys
            if 0 in self.index:
                header, image = self.read(0)
                if is_header_record(header, image):
                    first, end = self._header_range(header)
                    self.header = header
                    self.image_keys = np.arange(1, first, dtype=np.int64)
                    self.identity_ranges = self._identity_ranges(first, end)
        except BaseException:
            self.rec.close()
            raise

    def _check_offsets(self) -> None:
        offsets = self.index.offsets
        for i in np.flatnonzero((offsets < 0) | (offsets >= self.rec.size))[:1].tolist():
            raise DataFormatError(
                f"{self.idx_path}: key {int(self.index.keys[i])}: offset {int(offsets[i])} past the end of "
                f"{self.rec_path.name} ({self.rec.size} bytes); rebuild with `faceflow index {self.data_dir}`")

    def _header_range(self, header: IRHeader) -> tuple[int, int]:
        """[first identity key, end) of the header record, checked against the index size (so the image
        keys 1..first-1 and identity keys first..end-1 it implies cannot outnumber the index's keys)."""
        where = f"{self.rec_path}: key 0 (header record)"
        first, end = float(header.label[0]), float(header.label[1])
        if not (np.isfinite(first) and np.isfinite(end) and first == int(first) and end == int(end)):
            raise DataFormatError(f"{where}: label [{first}, {end}] is not an integer key range")
        first, end = int(first), int(end)
        if not 1 <= first <= end:
            raise DataFormatError(f"{where}: identity key range [{first}, {end}) is empty or reversed")
        if first - 1 > len(self.index) or end - first > len(self.index):
            raise DataFormatError(f"{where}: lists {first - 1} image and {end - first} identity keys but "
                                  f"{self.idx_path.name} holds only {len(self.index)} keys")
        return first, end

    _RANGE_ROWS = 1 << 16

    def _identity_ranges(self, first: int, end: int) -> np.ndarray:
        """(end - first, 2) [start, end) labels of the identity records, parsed in bulk over a map of
        the file; a record the bulk parser cannot vouch for is read exactly (its error names it)."""
        keys = np.arange(first, end, dtype=np.int64)
        at = self.index.positions(keys)
        for i in np.flatnonzero(at < 0)[:1].tolist():
            raise DataFormatError(f"{self.idx_path}: key {first + i}: identity record listed by the header is missing")
        mapped = mmap.mmap(self.rec._fd, 0, access=mmap.ACCESS_READ)
        try:
            bounds, ok = _label_pairs(np.frombuffer(mapped, np.uint8), self.index.offsets[at], self._RANGE_ROWS)
        finally:
            mapped.close()
        for i in np.flatnonzero(~ok).tolist():
            bounds[i] = self._identity_range(int(keys[i]))
        sane = np.isfinite(bounds).all(1) & (bounds >= 0).all(1) & (bounds < 1 << 31).all(1)
        for i in np.flatnonzero(~sane)[:1].tolist():
            raise DataFormatError(f"{self.rec_path}: key {int(keys[i])}: identity record label "
                                  f"{bounds[i].tolist()} is not an image key range")
        return bounds.astype(np.int64)

    def _identity_range(self, key: int) -> tuple[float, float]:
        header, _ = self.read(key)
        if header.flag < 2:
            raise DataFormatError(f"{self.rec_path}: key {key}: identity record has no [start, end) label")
        return float(header.label[0]), float(header.label[1])

    @property
    def num_classes(self) -> int | None:
        """Class count from `property`, else from the header's identity records, else None."""
        if self.property is not None:
            return self.property[0]
        return len(self.identity_ranges) if self.identity_ranges is not None else None

    def read(self, key: int) -> tuple[IRHeader, bytes]:
        """Header and image bytes of the record stored under `key`."""
        offset = self.index.offset(key)
        if offset is None:
            raise DataFormatError(f"{self.idx_path}: key {key}: not in the index")
        payload, _ = self.rec.read_at(offset, key)
        try:
            return unpack_payload(payload)
        except ValueError as err:
            raise DataFormatError(f"{self.rec_path}: key {key} at byte offset {offset}: {err}") from None

    def labelled_images(self, keys: Sequence[int], chunk_records: int | None = None
                        ) -> Iterator[tuple[int, int, bytes]]:
        """(key, integer label, image bytes) for `keys` in order, equal to what `read` gives: chunks parsed
        in bulk (`image_chunks`), `read` and its errors only for the records the bulk parser leaves out."""
        for chunk in self.image_chunks(keys, chunk_records):
            for i, key in enumerate(chunk.keys.tolist()):
                if chunk.regular[i]:
                    yield key, int(chunk.labels[i]), bytes(chunk.buffer[chunk.starts[i]:chunk.ends[i]])
                else:
                    header, image = self.read(key)
                    yield key, int(header.label[0]) if header.flag > 0 else int(header.label), image

    def image_chunks(self, keys: Sequence[int], chunk_records: int | None = None) -> Iterator[ImageChunk]:
        """`keys` in order as ImageChunks of `chunk_records` records (default CHUNK_RECORDS) whose framing
        and headers are parsed with numpy.

        The chunks view a read-only memory map of the file: no copy into user space, and the images stay
        valid for as long as a view of them is alive (a writer may hold them after the next chunk). The
        map's pages are released every few tens of MB read (they stay in the page cache; a view that
        reads them again faults them back in), so the process does not hold the whole file resident.
        """
        chunk_records = chunk_records or CHUNK_RECORDS
        keys = np.asarray(keys, np.int64).reshape(-1)
        n = len(keys)
        if n == 0:
            return
        mapped = mmap.mmap(self.rec._fd, 0, access=mmap.ACCESS_READ)
        try:
            if self.index.ascending and bool(np.all(keys[1:] > keys[:-1])):
                mapped.madvise(mmap.MADV_SEQUENTIAL)  # read-ahead for files not in the page cache
            view = memoryview(mapped)
            data = np.frombuffer(mapped, np.uint8)
            read = 0
            for lo in range(0, n, chunk_records):
                chunk_keys = keys[lo:lo + chunk_records]
                try:
                    rel = self.index.offsets_of(chunk_keys)
                except KeyError as err:
                    raise DataFormatError(f"{self.idx_path}: key {err.args[0]}: not in the index") from None
                starts, ends, labels, _, regular = _parse_frames(data, rel)
                yield ImageChunk(chunk_keys, view, data, starts, ends, labels, regular)
                read += int((ends - starts)[regular].sum())
                if read > _RELEASE_BYTES:
                    mapped.madvise(mmap.MADV_DONTNEED)
                    read = 0
            del data
            view.release()
        finally:
            try:
                mapped.close()
            except BufferError:  # a caller still holds a view: the mapping goes with the last one
                pass

    def __len__(self) -> int:
        return len(self.image_keys)

    def __iter__(self) -> Iterator[ImageRecord]:
        """Image records in key order, with an integer label (label[0] for array labels)."""
        for key in self.image_keys.tolist():
            header, image = self.read(key)
            raw = header.label
            label = int(raw[0]) if header.flag > 0 else int(raw)
            yield ImageRecord(key, label, raw, image)

    def close(self) -> None:
        """Close the underlying `.rec`."""
        self.rec.close()

    def __enter__(self) -> "RecordDataset":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _label_pairs(data: np.ndarray, offsets: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(float64 (n, 2) first two labels, sound) of the single-part flag >= 2 records at `offsets` in
    `data`, `rows` records at a time; records that are not sound have arbitrary labels. Returns copies."""
    need = _FRAME.size + _IR.size + 8
    bounds, ok = np.zeros((len(offsets), 2)), np.zeros(len(offsets), bool)
    for lo in range(0, len(offsets), rows):
        at = offsets[lo:lo + rows]
        fits = at + need <= len(data)
        raw = data[np.where(fits, at, 0)[:, None] + np.arange(need)]
        magic, lrec, flag = (np.ascontiguousarray(raw[:, :12]).view("=u4")[:, i] for i in range(3))
        length = (lrec & _LEN_MASK).astype(np.int64)
        bounds[lo:lo + rows] = np.ascontiguousarray(raw[:, 32:40]).view("=f4")
        ok[lo:lo + rows] = fits & (magic == MAGIC) & (lrec >> 29 == 0) & (flag >= 2) & \
            (_IR.size + 4 * flag.astype(np.int64) <= length) & (at + _FRAME.size + length <= len(data))
    return bounds, ok


class _Frames(NamedTuple):
    """Frame headers of a `.rec` found in bulk: record start offsets, and per record its IRHeader id
    (-1: payload shorter than an IRHeader; -2: the first part is, read the record to know)."""

    starts: np.ndarray
    ids: np.ndarray


def _frames_in_bulk(rec: RecordFile, with_ids: bool = True) -> _Frames | None:
    """Every record start (and IRHeader id) of a sound `.rec`, found with numpy a block at a time over a
    memory map; None when the file is not sound (then scan it record by record for the exact error).

    dmlc's writer escapes every 4-byte-aligned magic word inside a payload and pads records to 4 bytes,
    so in a sound file the aligned magic words are exactly the frame headers: found by comparing words,
    then checked to chain (each header's length leads to the next one, the last to the end of the file)
    and continuation flags checked to nest (1, 2..., 3).
    """
    if rec.size % 4 or rec.size == 0:
        return None
    mapped = mmap.mmap(rec._fd, 0, access=mmap.ACCESS_READ)
    try:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        return _chained_frames(mapped, with_ids)
    finally:
        with contextlib.suppress(BufferError):  # only after an exception inside: the map goes with its views
            mapped.close()


def _chained_frames(mapped: mmap.mmap, with_ids: bool) -> _Frames | None:
    """_frames_in_bulk over the map, a block of words at a time; each block's pages are released once
    searched (the process never holds the whole file resident)."""
    total = len(mapped) // 4
    starts, ids = [], []
    expected, open_record = 0, False
    for lo in range(0, total, _SCAN_WORDS):
        # the block's words and the next 6, where the header words of its last record may lie
        words = np.frombuffer(mapped, "<u4", min(_SCAN_WORDS + 6, total - lo), 4 * lo)
        hits = np.flatnonzero(words[:_SCAN_WORDS] == MAGIC)
        if hits.size:
            if hits[0] + lo != expected or hits[-1] + 1 >= len(words):
                return None
            lrec = words[hits + 1].astype(np.int64)
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            following = hits + 2 + (length + 3) // 4
            continues = (cflag == 2) | (cflag == 3)
            opens = (cflag == 1) | (cflag == 2)
            if (cflag > 3).any() or (following[:-1] != hits[1:]).any() or continues[0] != open_record or \
                    (continues[1:] != opens[:-1]).any() or lo + int(following[-1]) > total:
                return None
            expected, open_record = lo + int(following[-1]), bool(opens[-1])
            first = np.flatnonzero(~continues)
            at = hits[first]
            starts.append((at + lo) * 4)
            if with_ids:
                ids.append(_record_ids(words, at, length[first], cflag[first]))
        del words
        mapped.madvise(mmap.MADV_DONTNEED, 4 * lo, min(4 * _SCAN_WORDS, len(mapped) - 4 * lo))
    if expected != total or open_record:
        return None
    return _Frames(np.concatenate(starts) if starts else np.empty(0, np.int64),
                   np.concatenate(ids) if ids else np.empty(0, np.int64))


def _record_ids(words: np.ndarray, at: np.ndarray, part: np.ndarray, cflag: np.ndarray) -> np.ndarray:
    """IRHeader ids of the records whose frame headers are at word `at` (first part `part` bytes)."""
    ids = np.full(len(at), -1, np.int64)
    whole = part >= _IR.size
    word = at[whole] + 4  # the IRHeader id: 16 bytes into the payload
    ids[whole] = (words[word].astype(np.uint64) | words[word + 1].astype(np.uint64) << np.uint64(32)).astype(np.int64)
    ids[(part < _IR.size) & (cflag == 1)] = -2
    return ids


def _frames_one_by_one(rec: RecordFile) -> _Frames:
    """Every record start and IRHeader id, reading record after record (raises the first framing error)."""
    offsets, ids = array.array("q"), array.array("q")
    for offset, payload in rec.scan():
        offsets.append(offset)
        ids.append(_IR.unpack_from(payload)[2] if len(payload) >= _IR.size else -1)
    return _Frames(np.frombuffer(offsets, np.int64), np.frombuffer(ids, np.int64))


def scan_index(rec_path: str | Path) -> RecordIndex:
    """Build the key -> offset index of a `.rec` by scanning it.

    InsightFace layout (first record is a header): keys are the record ordinals 0..N-1, as the layout
    defines. im2rec layout: keys are each record's IRHeader id (im2rec writes id = key), or the
    ordinals when those ids are not unique.
    """
    with RecordFile(rec_path) as rec:
        frames = _frames_in_bulk(rec) or _frames_one_by_one(rec)
        starts, ids = frames
        for i in np.flatnonzero(ids == -2).tolist():
            payload, _ = rec.read_at(int(starts[i]))
            ids[i] = _IR.unpack_from(payload)[2] if len(payload) >= _IR.size else -1
        insightface = False
        if len(starts):
            payload, _ = rec.read_at(0)
            try:
                insightface = is_header_record(*unpack_payload(payload))
            except ValueError:
                insightface = False
    ordinals = np.arange(len(starts), dtype=np.int64)
    if not insightface and len(ids) and ids.min() >= 0 and len(np.unique(ids)) == len(ids):
        return RecordIndex(ids, starts)
    return RecordIndex(ordinals, starts)


def index_problem(data_dir: str | Path) -> str | None:
    """Why `train.idx` does not match `train.rec` (missing, unparseable, offsets off a record start), or None."""
    return _checked_index(Path(data_dir))[0]


def _checked_index(data_dir: Path) -> tuple[str | None, int]:
    """(index_problem, number of records the index lists)."""
    rec_path, idx_path = data_dir / REC_NAME, data_dir / IDX_NAME
    if not idx_path.exists():
        return "missing", 0
    try:
        index = read_index(idx_path)
    except DataFormatError as err:
        return str(err), 0
    with RecordFile(rec_path) as rec:
        frames = _frames_in_bulk(rec, with_ids=False)
        if frames is not None:
            return _problem_in_bulk(rec, index, frames.starts), len(index)
        last_end = 0
        for key, offset in index.items():
            try:
                _, end = rec.read_at(offset, key, ahead=RecordFile.SEQUENTIAL_WINDOW)
            except DataFormatError as err:
                return str(err), len(index)
            last_end = max(last_end, end)
        if last_end != rec.size:
            return f"records after byte {last_end} are not indexed ({rec.size} bytes)", len(index)
    return None, len(index)


def _problem_in_bulk(rec: RecordFile, index: RecordIndex, starts: np.ndarray) -> str | None:
    """index_problem for a sound `.rec` whose record starts are known: every offset must be one of them."""
    if not len(index):
        return f"records after byte 0 are not indexed ({rec.size} bytes)" if rec.size else None
    at = np.minimum(np.searchsorted(starts, index.offsets), len(starts) - 1)
    for i in np.flatnonzero(starts[at] != index.offsets)[:1].tolist():
        key, offset = int(index.keys[i]), int(index.offsets[i])
        try:
            rec.read_at(offset, key)
        except DataFormatError as err:
            return str(err)
        return f"{rec.path}: key {key}: byte offset {offset} is not the start of a record"
    last = int(at.max()) + 1
    last_end = int(starts[last]) if last < len(starts) else rec.size
    if last_end != rec.size:
        return f"records after byte {last_end} are not indexed ({rec.size} bytes)"
    return None


def refresh_index(data_dir: str | Path, force: bool = False) -> tuple[str | None, int]:
    """Rewrite `train.idx` from a scan of `train.rec` when it is missing or stale (or `force`):
    (why it was rewritten, None when it was current; records it lists)."""
    data_dir = Path(data_dir)
    if not (data_dir / REC_NAME).exists():
        raise DataFormatError(f"{data_dir / REC_NAME}: file not found")
    problem, records = ("forced", 0) if force else _checked_index(data_dir)
    if problem is None:
        return None, records
    index = scan_index(data_dir / REC_NAME)
    write_index(data_dir / IDX_NAME, index)
    return problem, len(index)

