"""`faceflow index`: rebuild train.idx from a scan of train.rec when it is missing or stale; the compact
RecordIndex and the numpy scan behind it."""
from __future__ import annotations

import struct
import tracemalloc

import mxnet as mx
import numpy as np
import pytest

from data_layer_samples import jpeg, make_dataset
from faceflow.cli.index import main as index_main
from faceflow.data import record_index, recordio
from faceflow.data.record_index import RecordIndex, write_index
from faceflow.data.recordio import (MAGIC, IRHeader, RecordDataset, RecordFile, RecordWriter, _frames_in_bulk,
                                    _frames_one_by_one, index_problem, pack_payload, read_index, refresh_index,
                                    write_insightface_dataset)


def test_missing_index_rebuilt_identically(tmp_path, capsys):
    make_dataset(tmp_path, [0, 1, 1, 2], num_classes=3)
    original = (tmp_path / "train.idx").read_text()
    (tmp_path / "train.idx").unlink()
    assert index_problem(tmp_path) == "missing"
    assert index_main([str(tmp_path)]) == 0
    assert "missing" in capsys.readouterr().out
    assert (tmp_path / "train.idx").read_text() == original
    assert index_problem(tmp_path) is None


def test_stale_index_detected_and_rebuilt(tmp_path):
    records = make_dataset(tmp_path, [0, 0, 1], num_classes=2)
    index = read_index(tmp_path / "train.idx")
    (tmp_path / "train.idx").write_text("".join(f"{k}\t{v + 4}\n" for k, v in index.items()))
    problem = index_problem(tmp_path)
    assert problem is not None and "wrong magic" in problem
    assert refresh_index(tmp_path) == (problem, len(index))
    with RecordDataset(tmp_path) as dataset:
        assert [r.image for r in dataset] == [image for _, image in records]


def test_index_missing_records_at_the_end_is_stale(tmp_path):
    make_dataset(tmp_path, [0, 1], num_classes=2)
    lines = (tmp_path / "train.idx").read_text().splitlines(keepends=True)
    (tmp_path / "train.idx").write_text("".join(lines[:-1]))
    assert "not indexed" in index_problem(tmp_path)


def test_current_index_left_alone(tmp_path):
    make_dataset(tmp_path, [0, 1], num_classes=2)
    before = (tmp_path / "train.idx").stat().st_mtime_ns
    assert refresh_index(tmp_path) == (None, 5)
    assert (tmp_path / "train.idx").stat().st_mtime_ns == before


def test_im2rec_index_keys_come_from_record_ids(tmp_path):
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "w")
    for key in (5, 9, 12):
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(key), key, 0), jpeg(key)))
    writer.close()
    original = (tmp_path / "train.idx").read_text()
    (tmp_path / "train.idx").unlink()
    assert refresh_index(tmp_path) == ("missing", 3)
    assert (tmp_path / "train.idx").read_text() == original


def _index_text(path) -> str:
    return path.read_text()


@pytest.mark.parametrize("layout", ["insightface", "im2rec"])
def test_bulk_scan_matches_the_record_by_record_scan(tmp_path, layout):
    """The numpy scan (aligned magic words chained by their lengths) gives what reading record after
    record gives, continuation parts included; a file it cannot vouch for falls back to that reading."""
    multi_part = jpeg(1) + b"\0" * (-len(jpeg(1)) % 4) + struct.pack("<I", MAGIC) * 2 + b"\xff\xd9"
    images = [multi_part if i in (2, 5) else jpeg(i) for i in range(8)]
    if layout == "insightface":
        write_insightface_dataset(tmp_path, [(i // 3, im) for i, im in enumerate(images)], 3, (16, 16))
    else:
        with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
            for i, image in enumerate(images):
                writer.write(10 * i + 3, pack_payload(IRHeader(0, float(i), 10 * i + 3, 0), image))
    written = _index_text(tmp_path / "train.idx")
    with RecordFile(tmp_path / "train.rec") as rec:
        bulk, exact = _frames_in_bulk(rec), _frames_one_by_one(rec)
    assert bulk is not None and np.array_equal(bulk.starts, exact.starts)
    assert np.array_equal(bulk.ids[bulk.ids != -2], exact.ids[bulk.ids != -2])
    (tmp_path / "train.idx").unlink()
    assert refresh_index(tmp_path) == ("missing", len(written.splitlines()))
    assert _index_text(tmp_path / "train.idx") == written
    assert index_problem(tmp_path) is None


def test_unsound_file_falls_back_to_reading_record_after_record(tmp_path):
    """An aligned magic word left unescaped inside a payload (not what dmlc writes, but readable)."""
    payload = pack_payload(IRHeader(0, 1.0, 0, 0), b"\xff\xd8\xff" + b"\0" + struct.pack("<I", MAGIC) + b"\xff\xd9")
    raw = struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)
    (tmp_path / "train.rec").write_bytes(raw * 3)
    with RecordFile(tmp_path / "train.rec") as rec:
        assert _frames_in_bulk(rec) is None
    assert refresh_index(tmp_path) == ("missing", 3)
    step = len(raw)
    assert _index_text(tmp_path / "train.idx") == f"0\t0\n1\t{step}\n2\t{2 * step}\n"
    assert index_problem(tmp_path) is None


def test_index_check_names_an_offset_inside_a_record(tmp_path):
    make_dataset(tmp_path, [0, 1, 1], num_classes=2)
    index = read_index(tmp_path / "train.idx")
    moved = {k: v + (8 if k == 2 else 0) for k, v in index.items()}
    write_index(tmp_path / "train.idx", moved)
    assert index_problem(tmp_path).endswith(f"key 2 at byte offset {moved[2]}: wrong magic "
                                            f"0x{struct.unpack_from('<I', (tmp_path / 'train.rec').read_bytes(), moved[2])[0]:08x}"
                                            f" at byte {moved[2]} (expected 0x{MAGIC:08x})")


def test_record_index_lookups_and_text_round_trip(tmp_path, monkeypatch):
    """Consecutive keys are looked up by subtraction, others through a sort order; the .idx text is
    parsed and written a block at a time, lines cut by a block boundary included."""
    monkeypatch.setattr(record_index, "_BLOCK", 7)
    monkeypatch.setattr(record_index, "_WRITE_ROWS", 2)
    keys = np.array([9, 2, 10 ** 18, 0, 55])
    offsets = np.array([0, 99999, 7, 2 ** 62, 123456789012])
    index = RecordIndex(keys, offsets)
    assert index.offset(10 ** 18) == 7 and index.offset(3) is None and 55 in index and 56 not in index
    assert index.offsets_of(np.array([0, 9, 55])).tolist() == [2 ** 62, 0, 123456789012]
    with pytest.raises(KeyError, match="56"):
        index.offsets_of(np.array([9, 56]))
    write_index(tmp_path / "x.idx", index)
    text = (tmp_path / "x.idx").read_text()
    assert text == "".join(f"{k}\t{v}\n" for k, v in zip(keys.tolist(), offsets.tolist()))
    again = read_index(tmp_path / "x.idx")
    assert again.keys.tolist() == keys.tolist() and again.offsets.tolist() == offsets.tolist()
    consecutive = RecordIndex(np.arange(5, 9), np.arange(4) * 10)
    assert consecutive.offset(7) == 20 and consecutive.offset(9) is None and consecutive.ascending


def test_per_record_memory_is_a_few_int64s(tmp_path, monkeypatch):
    """Rebuilding and checking the index and opening the dataset allocate < 64 bytes a record beyond
    their fixed-size working blocks (made small here, so that the per-record part shows at 50k records;
    tracemalloc sees numpy's buffers; the memory maps are file pages, released while reading)."""
    for module, name in ((recordio, "_SCAN_WORDS"), (record_index, "_BLOCK"), (record_index, "_WRITE_ROWS"),
                         (record_index, "_CHECK_ROWS")):
        monkeypatch.setattr(module, name, 1 << 10)
    n = 50_000
    payload = pack_payload(IRHeader(0, 0.0, 0, 0), b"\xff\xd8\xff\xd9")
    row = np.frombuffer(struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4), np.uint8)
    rows = np.repeat(row[None], n, axis=0)  # framed as the writer does, ids = keys (im2rec), written at once
    rows[:, 16:24] = np.arange(n, dtype="<u8")[:, None].view(np.uint8)
    (tmp_path / "train.rec").write_bytes(rows.tobytes())
    del rows
    steps = {"index (rebuild)": lambda: refresh_index(tmp_path), "index (check)": lambda: index_problem(tmp_path),
             "open the dataset": lambda: RecordDataset(tmp_path).close()}
    tracemalloc.start()
    try:
        for name, step in steps.items():
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            step()
            assert (tracemalloc.get_traced_memory()[1] - before) / n < 64, name
    finally:
        tracemalloc.stop()
    assert read_index(tmp_path / "train.idx").keys.tolist() == list(range(n))
