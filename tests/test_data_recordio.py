"""RecordIO reader/writer against MXNet's own recordio API, both layouts, multi-part records."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import mxnet as mx

from data_layer_samples import jpeg, make_dataset
from faceflow.data.recordio import (IRHeader, MAGIC, RecordDataset, RecordWriter, frame_record, pack_payload, read_property,
                                    unpack_payload, write_insightface_dataset)

# An image whose payload holds the RecordIO magic at 4-byte-aligned positions: MXNet splits such a
# record into continuation parts (flags 1, 2, 3) and must be re-joined on reading.
MAGIC_IMAGE = jpeg(99) + b"\0" * (-len(jpeg(99)) % 4) + struct.pack("<I", MAGIC) * 2 + b"tail\xff\xd9"


def _mx_records(idx: str, rec: str) -> dict[int, tuple]:
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    out = {}
    for key in reader.keys:
        header, image = mx.recordio.unpack(reader.read_idx(key))
        out[key] = (header, image)
    reader.close()
    return out


def _continuation_flags(rec_path) -> list[int]:
    """Non-zero continuation flags of the frames in a .rec, walking the framing directly."""
    raw, pos, flags = rec_path.read_bytes(), 0, []
    while pos < len(raw):
        magic, lrec = struct.unpack_from("<II", raw, pos)
        assert magic == MAGIC
        if lrec >> 29:
            flags.append(lrec >> 29)
        length = lrec & ((1 << 29) - 1)
        pos += 8 + length + (-length % 4)
    return flags


def test_insightface_layout_read_by_mxnet(tmp_path):
    labels = [0, 0, 1, 3, 3, 3]
    records = make_dataset(tmp_path, labels, num_classes=5)
    records[4] = (3, MAGIC_IMAGE)
    write_insightface_dataset(tmp_path, records, 5, (16, 16))
    assert _continuation_flags(tmp_path / "train.rec") == [1, 2, 3]
    got = _mx_records(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"))
    header0 = got[0][0]
    assert header0.flag > 0
    first, end = int(header0.label[0]), int(header0.label[1])
    assert (first, end) == (len(labels) + 1, len(labels) + 1 + 5)
    assert [got[k][0].label for k in range(1, first)] == labels
    assert [got[k][1] for k in range(1, first)] == [image for _, image in records]
    ranges = [tuple(int(v) for v in got[k][0].label) for k in range(first, end)]
    assert ranges == [(1, 3), (3, 4), (4, 4), (4, 7), (7, 7)]
    assert read_property(tmp_path) == (5, 16, 16)
    with RecordDataset(tmp_path) as dataset:
        assert dataset.identity_ranges.tolist() == [list(r) for r in ranges]
        assert [(r.key, r.label, r.image) for r in dataset] == [(k, l, im) for k, (l, im) in enumerate(records, 1)]


def test_mxnet_written_im2rec_layout_read_identically(tmp_path):
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "w")
    expected = []
    for i, key in enumerate([3, 7, 8, 20]):
        label = [float(i), 0.5] if i % 2 else float(i)
        image = MAGIC_IMAGE if i == 2 else jpeg(i)
        payload = mx.recordio.pack(mx.recordio.IRHeader(0, label, key, 0), image)
        writer.write_idx(key, payload)
        expected.append((key, i, image, frame_record(payload)))
    writer.close()
    raw = (tmp_path / "train.rec").read_bytes()
    assert _continuation_flags(tmp_path / "train.rec") == [1, 2, 3]
    assert raw == b"".join(e[3] for e in expected), "our framing must be byte-identical to MXNet's"
    with RecordDataset(tmp_path) as dataset:
        assert dataset.header is None
        assert dataset.num_classes is None
        got = list(dataset)
    assert [(r.key, r.label, r.image) for r in got] == [e[:3] for e in expected]
    assert np.array_equal(got[1].raw_label, np.array([1.0, 0.5], np.float32))


@pytest.mark.parametrize("label", [3.0, [2.0, 7.5, 1.0]])
def test_pack_unpack_match_mxnet(label):
    ours = pack_payload(IRHeader(0, label, 11, 4), b"img")
    theirs = mx.recordio.pack(mx.recordio.IRHeader(0, label, 11, 4), b"img")
    assert ours == theirs
    header, image = unpack_payload(theirs)
    mx_header, mx_image = mx.recordio.unpack(theirs)
    assert image == mx_image == b"img"
    assert header.flag == mx_header.flag and header.id == 11 and header.id2 == 4
    assert np.array_equal(np.asarray(header.label), np.asarray(mx_header.label))


def test_writer_rejects_unsorted_labels(tmp_path):
    with pytest.raises(ValueError, match="sorted"):
        write_insightface_dataset(tmp_path, [(1, jpeg(0)), (0, jpeg(1))], 2)
    assert not (tmp_path / "train.rec").exists()
    assert list(tmp_path.iterdir()) == []


def test_record_writer_publishes_only_on_success(tmp_path):
    """A failed `with RecordWriter` leaves neither the .rec nor its temporary; a finished one both files."""
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    with pytest.raises(RuntimeError, match="render failed"):
        with RecordWriter(rec, idx) as writer:
            writer.write(0, pack_payload(IRHeader(0, 1.0, 0, 0), jpeg(seed=1)))
            assert not rec.exists()  # still under its temporary name
            raise RuntimeError("render failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with RecordWriter(rec, idx) as writer:
        writer.write(7, pack_payload(IRHeader(0, 3.0, 7, 0), jpeg(seed=2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.idx", "train.rec"]
    record = mx.recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    header, image = mx.recordio.unpack(record.read_idx(7))
    assert header.label == 3.0 and image == jpeg(seed=2)


@pytest.mark.parametrize("chunk_records", [None, 3])
@pytest.mark.parametrize("order", ["file", "shuffled"])
def test_labelled_images_match_read_in_insightface_layout(tmp_path, chunk_records, order):
    multi_part = jpeg(1) + b"\0" * (-len(jpeg(1)) % 4) + struct.pack("<I", MAGIC) + b"\xff\xd9"
    records = [(i // 3, multi_part if i == 4 else jpeg(i, 16 + 8 * (i % 3))) for i in range(12)]
    write_insightface_dataset(tmp_path, records, 4, (16, 16))
    with RecordDataset(tmp_path) as dataset:
        keys = list(dataset.image_keys)
        if order == "shuffled":
            keys = [keys[i] for i in np.random.default_rng(0).permutation(len(keys))]
        fast = list(dataset.labelled_images(keys, chunk_records))
        slow = [(k, int(header.label), image) for k in keys for header, image in [dataset.read(k)]]
    assert fast == slow
    assert sorted(fast) == [(k, label, image) for k, (label, image) in enumerate(records, 1)]
