"""`faceflow convert rec`: OFRecord output, shuffling/splitting, and every bad-input error."""
from __future__ import annotations


import pytest

from data_layer_samples import jpeg, make_dataset
from faceflow.cli.main import main as faceflow_main
from faceflow.data.convert import convert_rec
from faceflow.data.ofrecord import count_records, read_records
from faceflow.data.recordio import read_index, write_insightface_dataset

LABELS = [0, 0, 1, 1, 1, 2, 3, 3]


def _convert(*args: str) -> int:
    return faceflow_main(["convert", *args, "--quiet"])


def test_convert_writes_parts_with_unchanged_bytes(tmp_path, capsys):
    records = make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    assert _convert("rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--parts", "3") == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("8 records, 4 classes, ") and "MB/s" in line
    names = sorted(p.name for p in (tmp_path / "of").iterdir())
    assert names == ["meta.json", "part-00000", "part-00001", "part-00002"]
    assert count_records(tmp_path / "of") == [3, 3, 2]
    got = sorted((r["label"], r["encoded"]) for r in read_records(tmp_path / "of"))
    assert got == sorted(records)


def test_shuffle_is_a_seeded_permutation(tmp_path):
    records = make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    orders = []
    for seed in (1, 1, 2):
        convert_rec(tmp_path / "rec", tmp_path / f"of{len(orders)}", 1, shuffle=True, seed=seed, progress=False)
        orders.append([(r["label"], r["encoded"]) for r in read_records(tmp_path / f"of{len(orders)}")])
    assert orders[0] == orders[1] != orders[2]
    assert sorted(orders[0]) == sorted(records) and orders[0] != records


def _assert_failed_cleanly(tmp_path, capsys, args, *fragments):
    out = tmp_path / "of"
    assert _convert("rec", *args, str(out)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("faceflow convert: error: ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".of")], "temporary output left behind"


def test_wrong_magic(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    offset = read_index(tmp_path / "rec" / "train.idx")[3]
    with open(tmp_path / "rec" / "train.rec", "r+b") as f:
        f.seek(offset)
        f.write(b"\0\0\0\0")
    _assert_failed_cleanly(tmp_path, capsys, [str(tmp_path / "rec")], "train.rec", "key 3", f"offset {offset}",
                           "wrong magic")


def test_truncated_rec(tmp_path, capsys):
    write_insightface_dataset(tmp_path / "rec", [(i, jpeg(i)) for i in range(3)], 3, (16, 16))
    rec = tmp_path / "rec" / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-10])
    _assert_failed_cleanly(tmp_path, capsys, [str(rec.parent)], "train.rec", "key 6", "truncated")


def test_truncated_image_record(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    index = read_index(tmp_path / "rec" / "train.idx")
    lines = [f"{k}\t{v}\n" for k, v in index.items() if k <= 8]  # an im2rec-style index of image records only
    (tmp_path / "rec" / "train.idx").write_text("".join(lines[1:]))
    rec = tmp_path / "rec" / "train.rec"
    rec.write_bytes(rec.read_bytes()[:index[8] + 100])
    _assert_failed_cleanly(tmp_path, capsys, [str(rec.parent)], "train.rec", "key 8", f"offset {index[8]}",
                           "truncated record")


def test_idx_offset_past_end(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    idx = tmp_path / "rec" / "train.idx"
    idx.write_text(idx.read_text().replace("\n2\t", "\n2\t9999999", 1))
    _assert_failed_cleanly(tmp_path, capsys, [str(idx.parent)], "train.idx", "key 2", "offset 9999999",
                           "faceflow index")


def test_label_outside_property(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    (tmp_path / "rec" / "property").write_text("3,16,16\n")
    _assert_failed_cleanly(tmp_path, capsys, [str(tmp_path / "rec")], "train.rec", "key 7", "label 3 outside [0, 3)")


@pytest.mark.parametrize("bad", [b"definitely not an image", jpeg(5)[:-40]])
def test_undecodable_image_fails_or_is_skipped(tmp_path, capsys, bad):
    records = [(label, jpeg(i)) for i, label in enumerate(LABELS)]
    records[4] = (records[4][0], bad)
    write_insightface_dataset(tmp_path / "rec", records, 4, (16, 16))
    _assert_failed_cleanly(tmp_path, capsys, [str(tmp_path / "rec")], "train.rec", "key 5", "--skip-bad")
    assert _convert("rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--skip-bad") == 0
    assert "1 bad skipped" in capsys.readouterr().out
    assert sorted(r["encoded"] for r in read_records(tmp_path / "of")) == sorted(im for i, (_, im) in enumerate(records)
                                                                                  if i != 4)


def test_parts_below_one(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    _assert_failed_cleanly(tmp_path, capsys, [str(tmp_path / "rec"), "--parts", "0"], "--parts", "0")


def test_failed_reconvert_keeps_previous_output(tmp_path, capsys):
    make_dataset(tmp_path / "rec", LABELS, num_classes=4)
    assert _convert("rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--parts", "2") == 0
    (tmp_path / "rec" / "property").write_text("2,16,16\n")
    assert _convert("rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--parts", "4") == 1
    assert count_records(tmp_path / "of") == [4, 4]
