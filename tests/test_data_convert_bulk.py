"""The bulk conversion path (numpy framing, windowed/mmap chunk reader) is byte-identical to protobuf."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image


from data_layer_samples import jpeg, make_dataset
from faceflow.data import recordio
from faceflow.data.convert import convert_rec
from faceflow.data.ofrecord import FramedRecordEncoder, part_name, serialize_train_record, serialize_val_record
from faceflow.data.recordio import MAGIC, IRHeader, RecordDataset, RecordWriter, pack_payload, read_index, write_index
from faceflow.errors import DataFormatError

MAGIC_IMAGE = jpeg(7) + b"\0" * (-len(jpeg(7)) % 4) + struct.pack("<I", MAGIC) + b"more\xff\xd9"  # continuation parts


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("runs", [[0], [0, 1], [0, 5, 6, 17], list(range(20))])
def test_bulk_glue_matches_protobuf(runs):
    rng = np.random.default_rng(len(runs))
    lengths = rng.choice([0, 1, 127, 128, 5000, 16383, 16384, (1 << 21) - 30, 1 << 21], 20)
    values = rng.choice([0, 1, 127, 128, 16383, 16384, 1 << 28, (1 << 31) - 1], 20)
    data = [bytes(rng.integers(0, 256, n, dtype=np.uint8)) for n in lengths]
    bounds = runs + [len(data)]
    for name, serialize, vals in (("label", serialize_train_record, values),
                                  ("issame", lambda d, v: serialize_val_record(d, bool(v)), values % 2)):
        glue, cuts = FramedRecordEncoder("encoded", name).glue(lengths, vals, runs)
        assert len(cuts) == len(data) + len(runs) + 1
        for r, (start, end) in enumerate(zip(bounds, bounds[1:])):
            rows = [glue[cuts[k]:cuts[k + 1]] for k in range(start + r, end + r + 1)]
            got = b"".join(row + d for row, d in zip(rows, data[start:end])) + rows[-1]
            want = b""
            for d, v in zip(data[start:end], vals[start:end]):
                serialized = serialize(d, int(v))
                want += struct.pack("q", len(serialized)) + serialized
            assert got == want


def _im2rec_dataset(path, images, labels):
    """im2rec layout with array labels [label, 0.5] (flag 2), one key per image."""
    with RecordWriter(path / "train.rec", path / "train.idx") as writer:
        for key, (image, label) in enumerate(zip(images, labels)):
            writer.write(key, pack_payload(IRHeader(2, np.array([label, 0.5], np.float32), key, 0), image))


@pytest.mark.parametrize("chunk_records", [None, 4, 1])
@pytest.mark.parametrize("order", ["file", "shuffled"])
def test_labelled_images_match_read_with_array_labels(tmp_path, chunk_records, order):
    images = [MAGIC_IMAGE if i == 3 else jpeg(i, 16 + 8 * (i % 4)) for i in range(15)]
    _im2rec_dataset(tmp_path, images, [i // 2 for i in range(15)])
    with RecordDataset(tmp_path) as dataset:
        keys = list(dataset.image_keys)
        if order == "shuffled":
            keys = [keys[i] for i in np.random.default_rng(0).permutation(len(keys))]
        got = list(dataset.labelled_images(keys, chunk_records))
        irregular = sum(int((~chunk.regular).sum()) for chunk in dataset.image_chunks(keys, chunk_records))
    assert got == [(k, k // 2, images[k]) for k in keys]
    assert irregular >= 1  # the continuation record at least goes through `read`


@pytest.mark.parametrize("chunk_records", [2048, 5])
@pytest.mark.parametrize("parts,shuffle", [(1, False), (3, False), (4, True)])
def test_convert_is_byte_identical_to_protobuf(tmp_path, monkeypatch, chunk_records, parts, shuffle):
    monkeypatch.setattr(recordio, "CHUNK_RECORDS", chunk_records)
    if chunk_records == 5:  # the map's pages released after every chunk, while the writer still reads them
        monkeypatch.setattr(recordio, "_RELEASE_BYTES", 0)
    images = [jpeg(i, 16 + 8 * (i % 5)) for i in range(23)]
    images[4], images[9], images[15] = MAGIC_IMAGE, _png(), b"not an image"
    labels = [i // 3 for i in range(23)]
    _im2rec_dataset(tmp_path / "rec", images, labels)
    summary = convert_rec(tmp_path / "rec", tmp_path / "of", parts, shuffle=shuffle, seed=5, skip_bad=True,
                          verify=False, progress=False)  # the framing path (the PNG passes the structural check)
    keys = np.arange(23)
    if shuffle:
        keys = keys[np.random.default_rng(5).permutation(23)]
    kept = [int(k) for k in keys if k != 15]
    want = [b""] * parts
    for i, key in enumerate(kept):
        serialized = serialize_train_record(images[key], labels[key])
        want[i % parts] += struct.pack("q", len(serialized)) + serialized
    got = [(tmp_path / "of" / part_name(p)).read_bytes() for p in range(parts)]
    assert got == want
    assert (summary.records, summary.skipped, summary.bytes) == (22, 1, sum(map(len, want)))


def test_nan_label_is_a_one_line_error(tmp_path):
    _im2rec_dataset(tmp_path / "rec", [jpeg(0), jpeg(1)], [0, float("nan")])
    with pytest.raises(DataFormatError, match=r"train.rec: key 1: label nan is not a number"):
        convert_rec(tmp_path / "rec", tmp_path / "of", 1, progress=False)
    assert not (tmp_path / "of").exists()


def test_image_key_missing_from_index_is_a_one_line_error(tmp_path):
    make_dataset(tmp_path / "rec", [0, 0, 1, 1], 2)
    index = read_index(tmp_path / "rec" / "train.idx")
    write_index(tmp_path / "rec" / "train.idx", {k: v for k, v in index.items() if k != 3})
    with pytest.raises(DataFormatError, match=r"train.idx: key 3: not in the index"):
        convert_rec(tmp_path / "rec", tmp_path / "of", 1, progress=False)
    assert not (tmp_path / "of").exists()
