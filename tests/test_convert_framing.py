"""Bulk OFRecord framing edge cases: mixed varint widths in one chunk, empty batches, one-time protobuf check."""
from __future__ import annotations

import errno
import gc
import struct
import threading

import numpy as np
import pytest


from data_layer_samples import jpeg
from faceflow.data import ofrecord, recordio
from faceflow.data.convert import convert_rec
from faceflow.data.ofrecord import FramedRecordEncoder, part_name, serialize_train_record
from faceflow.data.recordio import IRHeader, RecordWriter, pack_payload
from faceflow.errors import FaceflowError


def _rec_dataset(data_dir, images: list[bytes], per_class: int) -> None:
    """im2rec layout: key k holds images[k] with label k // per_class."""
    with RecordWriter(data_dir / "train.rec", data_dir / "train.idx") as writer:
        for key, image in enumerate(images):
            writer.write(key, pack_payload(IRHeader(0, float(key // per_class), key, 0), image))


def _framed(data: bytes, label: int) -> bytes:
    serialized = serialize_train_record(data, label)
    return struct.pack("q", len(serialized)) + serialized


def test_glue_mixes_every_varint_width_in_one_batch():
    # every record length and label on both sides of each varint width boundary, interleaved
    lengths = np.array([0, 127, 128, 16383, 16384, 2097151, 2097152, 5, 16370, 16371, 16372])
    values = np.array([0, 127, 128, 16383, 16384, 2097151, 2097152, (1 << 28) - 1, 1 << 28, (1 << 31) - 1, 1])
    rng = np.random.default_rng(0)
    data = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in lengths]
    glue, cuts = FramedRecordEncoder("encoded", "label").glue(lengths, values)
    rows = [glue[a:b] for a, b in zip(cuts, cuts[1:])]
    got = b"".join(row + d for row, d in zip(rows, data)) + rows[-1]
    assert got == b"".join(_framed(d, int(v)) for d, v in zip(data, values))


@pytest.mark.parametrize("runs", [(0,), (), (0, 1)])
def test_glue_of_no_records_is_empty(runs):
    glue, cuts = FramedRecordEncoder("encoded", "label").glue(np.zeros(0, np.int64), np.zeros(0, np.int64), runs)
    assert glue == b"" and cuts == [0] * (len(runs) + 1)


def test_chunk_of_only_skipped_records(tmp_path, monkeypatch):
    """A chunk whose records are all bad and skipped writes nothing, and the parts stay round-robin."""
    monkeypatch.setattr(recordio, "CHUNK_RECORDS", 3)
    images = [jpeg(i) for i in range(9)]
    for bad in (3, 4, 5):
        images[bad] = b"not an image, long enough to fill a window" * 8
    with RecordWriter(tmp_path / "rec" / "train.rec", tmp_path / "rec" / "train.idx") as writer:
        for key, image in enumerate(images):
            writer.write(key, pack_payload(IRHeader(0, float(key % 4), key, 0), image))
    summary = convert_rec(tmp_path / "rec", tmp_path / "of", 2, skip_bad=True, progress=False)
    kept = [k for k in range(9) if k not in (3, 4, 5)]
    want = [b"".join(_framed(images[k], k % 4) for k in kept[p::2]) for p in range(2)]
    assert [(tmp_path / "of" / part_name(p)).read_bytes() for p in range(2)] == want
    assert (summary.records, summary.skipped) == (6, 3)


def test_protobuf_check_runs_once_per_feature_names(monkeypatch):
    calls = []
    check = FramedRecordEncoder._verify
    monkeypatch.setattr(ofrecord, "_VERIFIED_NAMES", set())
    monkeypatch.setattr(FramedRecordEncoder, "_verify", lambda self: calls.append(self._names) or check(self))
    for _ in range(3):
        FramedRecordEncoder("encoded", "label")
    FramedRecordEncoder("encoded", "issame")
    assert calls == [("encoded", "label"), ("encoded", "issame")]


def test_protobuf_check_catches_wrong_framing(monkeypatch):
    monkeypatch.setattr(ofrecord, "_VERIFIED_NAMES", set())
    monkeypatch.setattr(FramedRecordEncoder, "_head", lambda self, length, tail_length: b"\0" * 8)
    with pytest.raises(RuntimeError, match="disagrees with protobuf"):
        FramedRecordEncoder("encoded", "label")


@pytest.mark.parametrize("flush_pieces", [900, 5])
def test_short_writes_are_completed(tmp_path, monkeypatch, flush_pieces):
    """Every writev writes only half of what it was given: the rest is written, the bytes are unchanged."""
    images = [jpeg(i, 16 + 8 * (i % 3)) for i in range(17)]
    _rec_dataset(tmp_path / "rec", images, 2)
    real_write = ofrecord.os.write
    calls = []

    def half_writev(fd: int, buffers: list) -> int:
        data = b"".join(bytes(b) for b in buffers)
        calls.append(len(data))
        return real_write(fd, data[:len(data) // 2])

    monkeypatch.setattr(ofrecord.os, "writev", half_writev)
    monkeypatch.setattr(ofrecord.PartsWriter, "_FLUSH_PIECES", flush_pieces)
    summary = convert_rec(tmp_path / "rec", tmp_path / "of", 3, shuffle=True, seed=2, progress=False)
    keys = np.random.default_rng(2).permutation(17).tolist()
    want = [b"".join(_framed(images[k], k // 2) for k in keys[p::3]) for p in range(3)]
    assert [(tmp_path / "of" / part_name(p)).read_bytes() for p in range(3)] == want
    assert summary.bytes == sum(map(len, want)) and len(calls) >= 3


def test_failed_background_write_stops_with_the_part_named_and_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails in the writer thread (disk full) stops the conversion with one line naming the
    part; no output directory and no temporary directory are left; the garbage collector is back on."""
    _rec_dataset(tmp_path / "rec", [jpeg(i, 16 + 8 * (i % 3)) for i in range(40)], 4)
    real_writev = ofrecord.os.writev
    calls = []

    def full_disk(fd: int, buffers: list) -> int:
        calls.append(threading.current_thread().name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writev(fd, buffers)

    monkeypatch.setattr(ofrecord.os, "writev", full_disk)
    monkeypatch.setattr(recordio, "CHUNK_RECORDS", 4)
    out = tmp_path / "out" / "of"
    assert gc.isenabled()
    with pytest.raises(FaceflowError, match=r"out/of/part-00000: cannot write the part: No space left on device"):
        convert_rec(tmp_path / "rec", out, 2, progress=False)
    assert gc.isenabled()
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []
    assert calls[0].startswith("faceflow-parts") and len(set(calls)) == 1  # written off the main thread
