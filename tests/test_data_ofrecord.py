"""OFRecord framing: faceflow's OFRecord messages and the conversion fast path are byte-identical to OneFlow's record_pb2."""
from __future__ import annotations

import struct

import pytest

from data_layer_samples import jpeg, make_dataset
from faceflow.data.ofrecord import (FramedRecordEncoder, PartsWriter, part_files, read_records,
                                    serialize_train_record, serialize_val_record)
from faceflow.errors import DataFormatError


def test_ofrecord_messages_match_oneflow_record_pb2():
    from faceflow.data.ofrecord_proto import OFRecord
    from faceflow.runtime.flow import flow  # noqa: F401  (OneFlow's own protobuf module needs its libraries)
    from oneflow.core.record import record_pb2

    ours, theirs = OFRecord(), record_pb2.OFRecord()
    for record in (ours, theirs):
        record.feature["encoded"].bytes_list.value.extend([b"\xff\xd8" * 90, b""])
        record.feature["label"].int32_list.value.extend([0, 300, (1 << 31) - 1])
        record.feature["f"].float_list.value.append(1.5)
        record.feature["d"].double_list.value.append(-2.25)
        record.feature["i"].int64_list.value.append(1 << 40)
    wire = theirs.SerializeToString(deterministic=True)
    assert ours.SerializeToString(deterministic=True) == wire
    parsed = OFRecord.FromString(wire)
    assert list(parsed.feature["label"].int32_list.value) == [0, 300, (1 << 31) - 1]
    assert parsed.feature["i"].WhichOneof("kind") == "int64_list"


@pytest.mark.parametrize("length", [0, 1, 120, 127, 128, 16370, 16383, 16384, 1 << 21])
@pytest.mark.parametrize("label", [0, 127, 128, 85741, (1 << 31) - 1])
def test_fast_encoder_matches_protobuf(length, label):
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    framed = b"".join(FramedRecordEncoder("encoded", "label").encode(data, label))
    expected = serialize_train_record(data, label)
    assert framed == struct.pack("q", len(expected)) + expected
    val = b"".join(FramedRecordEncoder("encoded", "issame").encode(data, label % 2))
    expected = serialize_val_record(data, bool(label % 2))
    assert val == struct.pack("q", len(expected)) + expected


def test_parts_writer_is_atomic_and_numbered(tmp_path):
    with PartsWriter(tmp_path / "of", 3) as writer:
        for i in range(7):
            writer.write(serialize_train_record(jpeg(i), i))
        assert not (tmp_path / "of").exists()
    assert [p.name for p in part_files(tmp_path / "of")] == ["part-00000", "part-00001", "part-00002"]
    assert [r["label"] for r in read_records(tmp_path / "of")] == [0, 3, 6, 1, 4, 2, 5]
    with pytest.raises(RuntimeError):
        with PartsWriter(tmp_path / "of", 2) as writer:
            writer.write(serialize_train_record(b"x", 1))
            raise RuntimeError("interrupted")
    assert len(part_files(tmp_path / "of")) == 3, "a failed rewrite keeps the previous complete output"
    assert [p.name for p in tmp_path.iterdir()] == ["of"]


def test_reader_rejects_truncated_part_and_gaps(tmp_path):
    make_dataset(tmp_path / "rec", [0, 1], 2)
    with PartsWriter(tmp_path / "of", 2) as writer:
        writer.write(serialize_train_record(b"abc", 0))
        writer.write(serialize_train_record(b"def", 1))
    part = tmp_path / "of" / "part-00001"
    part.write_bytes(part.read_bytes()[:-2])
    with pytest.raises(DataFormatError, match="part-00001: byte offset 0"):
        list(read_records(tmp_path / "of"))
    (tmp_path / "of" / "part-00000").unlink()
    with pytest.raises(DataFormatError, match="not numbered"):
        part_files(tmp_path / "of")
