"""OFRecord part files as OneFlow's OFRecordReader reads them: `part-00000`, `part-00001`, ...

Each part is a sequence of `int64 length` (native order) + serialized `OFRecord` protobuf. Training
records hold `encoded` (the JPEG bytes, unchanged) and `label` (int32); validation records hold
`encoded` and `issame` (int32, the pair flag repeated on both images of a pair).
"""
from __future__ import annotations

import collections
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Iterator, Sequence

import numpy as np

from faceflow.data import ofrecord_proto

from faceflow.data.atomic import atomic_dir
from faceflow.errors import DataFormatError, FaceflowError

PART_SUFFIX_LENGTH = 5
PART_PREFIX = "part-"
PORT_VALIDATION_PART = "part-0"  # the single part the OneFlow port's validation converter writes
META_NAME = "meta.json"  # the converter's side file: kind, source, counts, image size
_LENGTH = struct.Struct("q")


def part_name(index: int) -> str:
    """File name of part `index` (`part-00000`), as OFRecordReader(part_name_suffix_length=5) expects."""
    return f"{PART_PREFIX}{index:0{PART_SUFFIX_LENGTH}d}"


def serialize_train_record(image: bytes, label: int) -> bytes:
    """Serialized OFRecord with `encoded` = image bytes and `label` = int32 label."""
    record = ofrecord_proto.OFRecord()
    record.feature["encoded"].bytes_list.value.append(image)
    record.feature["label"].int32_list.value.append(label)
    return record.SerializeToString(deterministic=True)


def serialize_val_record(image: bytes, issame: bool) -> bytes:
    """Serialized OFRecord with `encoded` = image bytes and `issame` = int32 pair flag."""
    record = ofrecord_proto.OFRecord()
    record.feature["encoded"].bytes_list.value.append(image)
    record.feature["issame"].int32_list.value.append(int(issame))
    return record.SerializeToString(deterministic=True)


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (short forms unrolled: this runs per record)."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 0x200000:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


_VARINT_LIMITS = np.array([1 << 7, 1 << 14, 1 << 21, 1 << 28])
_VARINT_CONTINUE = np.array([sum(0x80 << 8 * k for k in range(n - 1)) for n in range(6)], np.uint64)
_VARINT_USED = np.arange(5) < np.arange(6)[:, None]


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    return np.searchsorted(_VARINT_LIMITS, values, side="right") + 1


def _varint_slots(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of values in [0, 2^32) as (..., 5) uint8 slots and the mask of the slots in use.

    The 7-bit groups are packed into the low bytes of a little-endian uint64 word per value.
    """
    v = values.astype(np.uint64)
    packed = v & np.uint64(0x7F)
    for k in range(1, 5):
        packed |= ((v >> np.uint64(7 * k)) & np.uint64(0x7F)) << np.uint64(8 * k)
    packed |= _VARINT_CONTINUE[lengths]
    slots = packed.astype(np.dtype("<u8"), copy=False).view(np.uint8).reshape(values.shape + (8,))[..., :5]
    return slots, _VARINT_USED[lengths]


_VERIFIED_NAMES: set[tuple[str, str]] = set()  # feature-name pairs whose framing matched protobuf's


class FramedRecordEncoder:
    """Fast path for conversion: a length-prefixed OFRecord of one bytes and one int32 feature, as pieces.

    Produces exactly `int64 length` + protobuf's deterministic serialization of the `OFRecord` message
    (checked against protobuf the first time a pair of feature names is used) without building a message:
    the image bytes are passed through untouched (they may be a memoryview into the source file)
    between a head and a tail that are computed once per (length, value). `glue` computes the
    framing of many records at once with numpy (the conversion path); `encode` does one record.
    """

    def __init__(self, bytes_name: str, int_name: str):
        if not bytes_name < int_name:
            raise ValueError("deterministic map order needs the bytes feature name to sort first")
        self._bytes_key = _field(0x0A, bytes_name.encode())
        self._int_key = _field(0x0A, int_name.encode())
        self._names = (bytes_name, int_name)
        self._heads: dict[tuple[int, int], bytes] = {}
        self._tails: dict[int, bytes] = {}
        self._layout: tuple[dict[str, slice], np.ndarray, np.ndarray] | None = None
        # Tail = prefix (depends only on the value's varint length) + varint(value).
        prefixes = [self._tail((1 << 7 * (n - 1)) if n > 1 else 0)[:-n] for n in range(1, 6)]
        if len({len(p) for p in prefixes}) != 1:
            raise ValueError("feature names too long for single-byte nested lengths")
        self._tail_prefix = np.frombuffer(b"".join([prefixes[0]] + prefixes), np.uint8).reshape(6, -1)
        if self._names not in _VERIFIED_NAMES:
            self._verify()
            _VERIFIED_NAMES.add(self._names)

    def _verify(self) -> None:
        """Raise unless encode and glue both give protobuf's framing of a sample record."""
        bytes_name, int_name = self._names
        sample = b"\xff\xd8" * 70
        expected = ofrecord_proto.OFRecord()
        expected.feature[bytes_name].bytes_list.value.append(sample)
        expected.feature[int_name].int32_list.value.append(300)
        serialized = expected.SerializeToString(deterministic=True)
        glue, cuts = self.glue(np.array([len(sample)]), np.array([300]))
        bulk = glue[:cuts[1]] + sample + glue[cuts[1]:]
        if not b"".join(self.encode(sample, 300)) == bulk == _LENGTH.pack(len(serialized)) + serialized:
            raise RuntimeError("FramedRecordEncoder disagrees with protobuf's OFRecord serialization")

    def _tail(self, value: int) -> bytes:
        if not 0 <= value < 1 << 31:
            raise ValueError(f"{self._names[1]} {value} outside the non-negative int32 range")
        int32_list = _field(0x0A, _varint(value))
        tail = self._tails[value] = _field(0x0A, self._int_key + _field(0x12, _field(0x22, int32_list)))
        return tail

    def _head(self, length: int, tail_length: int) -> bytes:
        v = _varint
        l1 = 1 + len(v(length)) + length  # BytesList
        l2 = 1 + len(v(l1)) + l1  # Feature
        l3 = len(self._bytes_key) + 1 + len(v(l2)) + l2  # map entry
        total = 1 + len(v(l3)) + l3 + tail_length
        head = b"".join((_LENGTH.pack(total), b"\x0a", v(l3), self._bytes_key, b"\x12", v(l2), b"\x0a", v(l1),
                         b"\x0a", v(length)))
        self._heads[(length, tail_length)] = head
        return head

    def encode(self, data: bytes | memoryview, value: int) -> tuple[bytes, bytes | memoryview, bytes]:
        """(head, data, tail) whose concatenation is the framed record of `data` and int32 `value`."""
        tail = self._tails.get(value) or self._tail(value)
        length = len(data)
        head = self._heads.get((length, len(tail))) or self._head(length, len(tail))
        return head, data, tail

    def glue(self, lengths: np.ndarray, values: np.ndarray, runs: Sequence[int] = (0,)) -> tuple[bytes, list[int]]:
        """Framing of m records in one buffer, computed in bulk: (glue, cuts) with row k = glue[cuts[k]:cuts[k+1]].

        The records form consecutive runs starting at the indices `runs` (each run goes to one file).
        Run r of records s..e-1 is rows s+r .. e+r interleaved with the data: row s+r + data_s +
        row s+r+1 + data_{s+1} + ... + data_{e-1} + row e+r equals the concatenated
        `encode(data_i, values_i)`. The glue is every record's head then tail, in record order (built
        as fixed-slot rows, varints 5 slots wide, compacted once); rows are cut between a head and
        its tail, and before the head that starts a run.
        """
        lengths = np.asarray(lengths, np.int64)
        values = np.asarray(values, np.int64)
        m = len(lengths)
        if m == 0:
            return b"", [0] * (len(runs) + 1)
        if not (0 <= values.min() and values.max() < 1 << 31):
            bad = values[(values < 0) | (values >= 1 << 31)][0]
            raise ValueError(f"{self._names[1]} {bad} outside the non-negative int32 range")
        if not (0 <= lengths.min() and lengths.max() < 1 << 29):
            raise ValueError("record data must be shorter than 2^29 bytes")
        layout, template, fixed = self._block_layout()
        vl = _varint_lengths(values)
        a0 = _varint_lengths(lengths)
        l1 = 1 + a0 + lengths
        a1 = _varint_lengths(l1)
        l2 = 1 + a1 + l1
        a2 = _varint_lengths(l2)
        l3 = len(self._bytes_key) + 1 + a2 + l2
        a3 = _varint_lengths(l3)
        prefix = self._tail_prefix.shape[1]
        total = 1 + a3 + l3 + prefix + vl
        blocks = np.empty((m, len(template)), np.uint8)
        blocks[:] = template
        keep = np.empty(blocks.shape, bool)
        keep[:] = fixed
        blocks[:, layout["total"]] = total.astype(np.dtype("=i8")).view(np.uint8).reshape(m, 8)
        blocks[:, layout["prefix"]] = self._tail_prefix[vl]
        slots, in_use = _varint_slots(np.stack([l3, l2, l1, lengths, values]), np.stack([a3, a2, a1, a0, vl]))
        for i, name in enumerate(("l3", "l2", "l1", "len", "value")):
            blocks[:, layout[name]] = slots[i]
            keep[:, layout[name]] = in_use[i]
        size = 8 + total - lengths  # glue bytes of each record (its framed size without the data)
        head = size - prefix - vl
        ends = np.cumsum(size)
        starts = ends - size
        run_starts = np.asarray(runs, np.int64)
        cuts = np.insert(starts + head, run_starts, starts[run_starts]).tolist()
        cuts.append(int(ends[-1]))
        return blocks[keep].tobytes(), cuts

    def _block_layout(self) -> tuple[dict[str, slice], np.ndarray, np.ndarray]:
        """Slots of a record's glue block (head, then tail prefix + value varint), its constant bytes, and
        the mask of the slots every record uses (all but the unused ends of varint slots)."""
        if self._layout is None:
            fields: list[tuple[str, bytes | int]] = [
                ("total", 8), ("c0", b"\x0a"), ("l3", 5), ("key", self._bytes_key), ("c1", b"\x12"), ("l2", 5),
                ("c2", b"\x0a"), ("l1", 5), ("c3", b"\x0a"), ("len", 5), ("prefix", self._tail_prefix.shape[1]),
                ("value", 5)]
            layout, template, fixed, pos = {}, [], [], 0
            for name, spec in fields:
                width = spec if isinstance(spec, int) else len(spec)
                layout[name] = slice(pos, pos + width)
                template += list(spec) if isinstance(spec, bytes) else [0] * width
                fixed += [name in ("total", "prefix") or isinstance(spec, bytes)] * width
                pos += width
            self._layout = layout, np.array(template, np.uint8), np.array(fixed)
        return self._layout


class PartsWriter:
    """Write records round-robin over `num_parts` part files in a temporary directory.

    Pieces are gathered per part and written with `os.writev` (no user-space copy of the image
    bytes) by one background thread, so that framing the next records overlaps writing these (the
    system call releases the GIL). On a clean exit, once everything is written, the directory is
    renamed to `out_dir` (replacing it); on error it is removed.
    """

    _FLUSH_PIECES = 900  # below IOV_MAX (1024)

    def __init__(self, out_dir: str | Path, num_parts: int):
        if num_parts < 1:
            raise ValueError(f"num_parts must be at least 1, got {num_parts}")
        self.out_dir = Path(out_dir)
        self.num_parts = num_parts
        self.records = 0
        self.bytes = 0
        self._ctx = atomic_dir(self.out_dir)
        self._fds: list[int] = []
        self._pending: list[list[bytes | memoryview]] = []
        self._writer: ThreadPoolExecutor | None = None
        self._writes: collections.deque[Future] = collections.deque()
        # writes queued at most (about two batches' worth): bounds the framing held but not yet written
        self._max_queued = 2 * (num_parts + 1)
        self.tmp_dir = self.out_dir  # the temporary directory once entered (for side files)

    def __enter__(self) -> "PartsWriter":
        tmp = self.tmp_dir = self._ctx.__enter__()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faceflow-parts")
        try:
            for i in range(self.num_parts):
                self._fds.append(os.open(tmp / part_name(i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
                self._pending.append([])
        except OSError as err:  # too many parts for the open-file limit, no inodes left
            failure = FaceflowError(f"{self.out_dir}: cannot create {part_name(len(self._fds))} of {self.num_parts} "
                                    f"parts: {err.strerror}")
            self.__exit__(FaceflowError, failure, None)
            raise failure from None
        except BaseException as err:
            self.__exit__(type(err), err, err.__traceback__)  # removes the temporary directory
            raise
        return self

    def write(self, serialized: bytes) -> None:
        """Append one serialized OFRecord to the next part."""
        self.write_pieces((_LENGTH.pack(len(serialized)), serialized))

    def write_pieces(self, pieces: tuple[bytes | memoryview, ...]) -> None:
        """Append one record already framed as pieces (see FramedRecordEncoder) to the next part."""
        part = self.records % self.num_parts
        pending = self._pending[part]
        pending.extend(pieces)
        self.records += 1
        if len(pending) >= self._FLUSH_PIECES:
            self._flush(part)

    def write_batch(self, encoder: FramedRecordEncoder, data: Sequence[bytes | memoryview], lengths: np.ndarray,
                    values: np.ndarray) -> None:
        """Append records (data_i, int value_i) round-robin, framed in bulk and written with few `writev`s.

        `lengths[i]` must be `len(data[i])`. The data pieces are written in the background: they must stay
        unchanged until `flush()` or the end of the `with` block (views of a read-only memory map do).
        """
        n = len(data)
        first = self.records % self.num_parts
        used = min(self.num_parts, n)
        if used > 1:  # group the records by part: one glue computation for all parts
            order = np.concatenate([np.arange(i, n, self.num_parts) for i in range(used)])
            data = [data[i] for i in order.tolist()]
            lengths, values = lengths[order], values[order]
        bounds = [-(-(n - i) // self.num_parts) for i in range(used)]  # records per part, in order
        runs = np.concatenate([[0], np.cumsum(bounds)]).tolist()
        glue, cuts = encoder.glue(lengths, values, runs[:-1])
        view = memoryview(glue)
        rows = [view[a:b] for a, b in zip(cuts, cuts[1:])]
        for i in range(used):
            part = (first + i) % self.num_parts
            self._flush(part)
            start, end = runs[i], runs[i + 1]
            pieces: list[bytes | memoryview] = [b""] * (2 * (end - start) + 1)
            pieces[0::2] = rows[start + i:end + i + 1]
            pieces[1::2] = data[start:end]
            self._writev(part, pieces, cuts[end + i + 1] - cuts[start + i] + int(lengths[start:end].sum()))
        self.records += n

    def _writev(self, part: int, pieces: list[bytes | memoryview], total: int) -> None:
        """Queue `pieces` (`total` bytes) for part `part`; waits while too many writes are queued.

        A write that failed raises here, on the next call, or at `flush()`."""
        self.bytes += total
        self._writes.append(self._writer.submit(self._write_now, part, pieces, total))
        while len(self._writes) > self._max_queued:
            self._writes.popleft().result()

    def _write_now(self, part: int, pieces: list[bytes | memoryview], total: int) -> None:
        fd = self._fds[part]
        try:
            for i in range(0, len(pieces), self._FLUSH_PIECES):
                chunk = pieces[i:i + self._FLUSH_PIECES]
                written = os.writev(fd, chunk)
                if written < (total if len(chunk) == len(pieces) else sum(map(len, chunk))):
                    # a short write (signal, > 2 GB): finish with plain writes
                    rest = memoryview(b"".join(chunk))[written:]
                    while rest:
                        rest = rest[os.write(fd, rest):]
        except OSError as err:
            raise FaceflowError(f"{self.out_dir / part_name(part)}: cannot write the part: "
                                f"{err.strerror or err}") from None

    def _flush(self, part: int) -> None:
        pending = self._pending[part]
        if not pending:
            return
        self._pending[part] = []  # the queued write owns the old list
        self._writev(part, pending, sum(len(p) for p in pending))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                self.flush()
        except BaseException as err:
            exc_type, exc, tb = type(err), err, err.__traceback__
            raise
        finally:
            if self._writer is not None:
                self._writer.shutdown(wait=True, cancel_futures=True)  # no write outlives the files
            self._writes.clear()
            for fd in self._fds:
                os.close(fd)
            for part in range(len(self._pending)):
                self._pending[part] = []
            self._ctx.__exit__(exc_type, exc, tb)

    def flush(self) -> None:
        """Write every pending piece and wait until it is written (raising a write's error)."""
        for part in range(self.num_parts):
            self._flush(part)
        while self._writes:
            self._writes.popleft().result()


def part_files(data_dir: str | Path) -> list[Path]:
    """The `part-NNNNN` files of an OFRecord directory, in order (error when there are none)."""
    data_dir = Path(data_dir)
    parts = sorted(p for p in data_dir.glob(f"{PART_PREFIX}*")
                   if len(p.name) == len(PART_PREFIX) + PART_SUFFIX_LENGTH and p.name[len(PART_PREFIX):].isdigit())
    if not parts:
        found = " (found part-0, the OneFlow port's validation layout)" if (data_dir / PORT_VALIDATION_PART).is_file() \
            else ""
        raise DataFormatError(f"{data_dir}: no OFRecord parts named {part_name(0)}, {part_name(1)}, ...{found}")
    names = [p.name for p in parts]
    expected = [part_name(i) for i in range(len(parts))]
    if names != expected:
        missing = sorted(set(expected) - set(names))
        raise DataFormatError(
            f"{data_dir}: OFRecord parts are not numbered 0..{len(parts) - 1} (missing {missing[:3]})")
    return parts


def readable_parts(data_dir: str | Path) -> list[Path]:
    """Parts faceflow's own readers take: `part-00000`, `part-00001`, ..., or the OneFlow port's single `part-0`
    (OneFlow's OFRecordReader needs the first naming: see part_files)."""
    data_dir = Path(data_dir)
    if (data_dir / PORT_VALIDATION_PART).is_file() and not (data_dir / part_name(0)).exists():
        return [data_dir / PORT_VALIDATION_PART]
    return part_files(data_dir)


def _feature_value(feature: ofrecord_proto.Feature) -> object:
    kind = feature.WhichOneof("kind")
    if kind is None:
        return None
    values = list(getattr(feature, kind).value)
    return values[0] if len(values) == 1 else values


def read_part(path: str | Path) -> Iterator[dict[str, object]]:
    """Decoded records of one part file; single-valued features are unwrapped (bytes, int, float)."""
    path = Path(path)
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise DataFormatError(f"{path}: byte offset {pos}: truncated length field")
        (length,) = _LENGTH.unpack_from(data, pos)
        if length < 0 or pos + 8 + length > len(data):
            raise DataFormatError(f"{path}: byte offset {pos}: record of {length} bytes runs past the end")
        record = ofrecord_proto.OFRecord()
        try:
            record.ParseFromString(data[pos + 8:pos + 8 + length])
        except Exception:  # protobuf's DecodeError
            raise DataFormatError(f"{path}: byte offset {pos}: not an OFRecord message") from None
        yield {name: _feature_value(feature) for name, feature in record.feature.items()}
        pos += 8 + length


def read_records(data_dir: str | Path) -> Iterator[dict[str, object]]:
    """Decoded records of every part of an OFRecord directory (either naming, see readable_parts), part by part."""
    for path in readable_parts(data_dir):
        yield from read_part(path)


def count_records(data_dir: str | Path) -> list[int]:
    """Number of records in each part (reads only the length fields)."""
    counts = []
    for path in part_files(data_dir):
        n, pos, size = 0, 0, path.stat().st_size
        with open(path, "rb") as f:
            while pos < size:
                f.seek(pos)
                field = f.read(8)
                length = _LENGTH.unpack(field)[0] if len(field) == 8 else -1
                if length < 0 or pos + 8 + length > size:
                    raise DataFormatError(f"{path}: byte offset {pos}: truncated record (length field {length})")
                pos += 8 + length
                n += 1
        counts.append(n)
    return counts
