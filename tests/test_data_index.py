"""`faceflow index`: rebuild train.idx from a scan of train.rec when it is missing or stale."""
from __future__ import annotations

import mxnet as mx

from data_layer_samples import jpeg, make_dataset
from faceflow.cli.index import main as index_main
from faceflow.data.recordio import RecordDataset, index_problem, read_index, rebuild_index


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
    assert rebuild_index(tmp_path) == (True, len(index))
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
    assert rebuild_index(tmp_path) == (False, 5)
    assert (tmp_path / "train.idx").stat().st_mtime_ns == before


def test_im2rec_index_keys_come_from_record_ids(tmp_path):
    writer = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "w")
    for key in (5, 9, 12):
        writer.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(0, float(key), key, 0), jpeg(key)))
    writer.close()
    original = (tmp_path / "train.idx").read_text()
    (tmp_path / "train.idx").unlink()
    assert rebuild_index(tmp_path) == (True, 3)
    assert (tmp_path / "train.idx").read_text() == original
