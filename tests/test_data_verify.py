"""Images verified where they enter: the strict decode check, `convert rec` / `pack` decoding every image,
and the cached check of OFRecord training parts (bad_images fail | skip)."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from data_layer_samples import jpeg, make_dataset, unreadable_jpegs
from faceflow.cli.main import main as faceflow_main
from faceflow.data import check_cache
from faceflow.data.image_verify import ImageChecker, training_image_problem
from faceflow.data.ofrecord import PartsWriter, part_name, read_part, serialize_train_record
from faceflow.data.train_parts import verify_train_parts
from faceflow.errors import DataFormatError

EXPECTED = {"corrupt_body": "corrupt JPEG header", "garbage": "corrupt JPEG header",
            "truncated": "corrupt JPEG (Corrupt JPEG data: premature end of data segment)",
            "raw_truncated": "corrupt JPEG (Premature end of JPEG file)",
            "cmyk": "CMYK JPEG (OneFlow's training decoder cannot convert it to RGB)",
            "png": "PNG image, not a JPEG", "small": "image is 8x8, smaller than the 16x16 training crop"}


def test_every_unreadable_kind_is_named_and_good_images_pass():
    bad = unreadable_jpegs(16)
    assert set(bad) == set(EXPECTED)
    for kind, data in bad.items():
        assert EXPECTED[kind] in training_image_problem(data, (16, 16)), kind
    assert training_image_problem(b"") == "empty image"
    assert training_image_problem(jpeg(3, 16), (16, 16)) is None
    with ImageChecker(2) as checker:  # the pool gives the same answers, in order
        images = [jpeg(i, 16) for i in range(9)] + list(bad.values())
        assert checker.problems(images, (16, 16)) == [training_image_problem(d, (16, 16)) for d in images]
        assert list(checker.map(len, images)) == [len(d) for d in images]


def _rec_with(tmp_path, bad_kinds):
    """A 12-image InsightFace dataset (16x16) whose images 3, 7, ... are replaced by unreadable ones."""
    records = make_dataset(tmp_path / "rec", [i // 3 for i in range(12)], 4)
    bad = unreadable_jpegs(16)
    images = [image for _, image in records]
    for slot, kind in zip((3, 7, 10), bad_kinds):
        images[slot] = bad[kind]
    from faceflow.data.recordio import write_insightface_dataset
    write_insightface_dataset(tmp_path / "rec", [(label, image) for (label, _), image in zip(records, images)], 4,
                              (16, 16))
    return images


def test_convert_rec_decodes_every_image(tmp_path, capsys):
    _rec_with(tmp_path, ["corrupt_body", "cmyk"])
    out = tmp_path / "of"
    assert faceflow_main(["convert", "rec", str(tmp_path / "rec"), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "train.rec: key 4 at byte offset" in err and "corrupt JPEG header" in err and "--skip-bad" in err
    assert not out.exists()
    assert faceflow_main(["convert", "rec", str(tmp_path / "rec"), str(out), "--quiet", "--parts", "2",
                          "--skip-bad"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("10 records, 4 classes") and line.rstrip().endswith("2 bad skipped")
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["records"], meta["skipped"], meta["images_decoded"]) == (10, 2, True)
    checked = verify_train_parts(out)
    assert checked.checked == 0, "the converter's verification is cached: training does not decode again"
    assert (checked.counts(), checked.skipped) == ((4, 10), [])


def test_convert_rec_no_verify_keeps_the_structural_check(tmp_path, capsys):
    _rec_with(tmp_path, ["corrupt_body", "raw_truncated"])
    assert faceflow_main(["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet",
                          "--no-verify"]) == 1  # the structural check still finds the image cut short
    assert "key 8" in capsys.readouterr().err
    _rec_with(tmp_path, ["corrupt_body", "truncated"])
    assert faceflow_main(["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet",
                          "--no-verify"]) == 0
    assert json.loads((tmp_path / "of" / "meta.json").read_text())["images_decoded"] is False
    with pytest.raises(DataFormatError, match=r"part-00000: record 3 \(byte offset \d+\): corrupt JPEG header"):
        verify_train_parts(tmp_path / "of")  # what --no-verify let through, training's own check finds


def test_pack_decodes_every_image(tmp_path, capsys):
    bad = unreadable_jpegs(16)
    for c in range(2):
        (tmp_path / "tree" / f"id{c}").mkdir(parents=True)
        for i in range(3):
            (tmp_path / "tree" / f"id{c}" / f"{i}.jpg").write_bytes(jpeg(3 * c + i, 16))
    (tmp_path / "tree" / "id1" / "1.jpg").write_bytes(bad["garbage"])
    (tmp_path / "tree" / "id0" / "3.jpg").write_bytes(bad["cmyk"])
    out = tmp_path / "out"
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("id1/1.jpg (record key 6): corrupt JPEG header (tjDecompressHeader3(): Could not determine "
                        "subsampling level of JPEG image) (--skip-bad skips such images)") and "\n" not in err
    assert not (out / "train.rec").exists()
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(out), "--quiet", "--skip-bad"]) == 0
    assert "6 images, 2 classes, 16x16, 1 re-encoded as JPEG, 1 bad skipped" in capsys.readouterr().out
    from faceflow.data.recordio import RecordDataset
    with RecordDataset(out) as dataset:
        images = [record.image for record in dataset]
    assert all(training_image_problem(image, (16, 16)) is None for image in images), "CMYK was re-encoded as RGB"
    (tmp_path / "tree" / "id1" / "1.jpg").write_bytes(bad["truncated"])  # whole header, cut entropy data
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "fast"), "--quiet"]) == 1
    assert "id1/1.jpg (record key 6): corrupt JPEG (Corrupt JPEG data" in capsys.readouterr().err
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "fast"), "--quiet", "--no-verify"]) == 0
    assert "7 images" in capsys.readouterr().out, "--no-verify reads only the header of a JPEG"


def _write_part(path, records):
    """A part written record by record with protobuf (as other tools write them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for image, label in records:
            serialized = serialize_train_record(image, label)
            f.write(struct.pack("q", len(serialized)) + serialized)


def test_train_parts_check_fails_or_skips_and_is_cached(tmp_path):
    bad = unreadable_jpegs(112)
    good = [jpeg(i, 112) for i in range(6)]
    data = tmp_path / "data"
    _write_part(data / part_name(0), [(good[0], 0), (bad["corrupt_body"], 1), (good[1], 2), (bad["garbage"], 3)])
    _write_part(data / part_name(1), [(good[2], 4), (good[3], 5)])
    announced: list[str] = []
    with pytest.raises(DataFormatError) as err:
        verify_train_parts(data, announce=announced.append)
    assert len(announced) == 1 and announced[0].startswith(f"checking every record of 2 of 2 part(s) of {data}")
    assert str(err.value).startswith(f"{data / part_name(0)}: record 1 (byte offset ")
    assert "(1 more bad record(s)); set bad_images: skip to train without such records" in str(err.value)
    skipped = verify_train_parts(data, "skip", announce=announced.append)
    assert skipped.checked == 0 and len(announced) == 1, "the failed check was cached: nothing decoded again"
    assert [(path.name, b.index) for path, b in skipped.skipped] == [(part_name(0), 1), (part_name(0), 3)]
    assert skipped.counts() == (6, 4) and skipped.read_dir != data
    assert "2 unreadable training record(s) skipped in 1 of 2 parts" in skipped.log_lines()[0]
    view = skipped.read_dir
    assert (view / part_name(1)).is_symlink() and not (view / part_name(0)).is_symlink()
    assert [r["label"] for r in read_part(view / part_name(0))] == [0, 2]
    assert sorted(p.name for p in data.iterdir()) == [part_name(0), part_name(1)], "nothing written beside the data"
    stat = os.stat(data / part_name(1))
    os.utime(data / part_name(1), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = verify_train_parts(data, "skip")
    assert again.checked == 2, "a changed part is checked again"
    assert again.read_dir != view, "and the view follows the new identity"
    assert str(check_cache.cache_root()).startswith(os.environ[check_cache.CACHE_ENV])


def test_train_parts_structural_problems(tmp_path):
    data = tmp_path / "data"
    _write_part(data / part_name(0), [(jpeg(0, 112), 0), (jpeg(1, 112), -1)])
    with open(data / part_name(0), "ab") as f:
        f.write(struct.pack("q", 3) + b"\x01\x02\x03")
    with pytest.raises(DataFormatError, match=r"record 1 .*label -1 is negative \(1 more"):
        verify_train_parts(data)
    with open(data / part_name(0), "ab") as f:
        f.write(struct.pack("q", 1 << 40))
    with pytest.raises(DataFormatError, match=r"part-00000: byte offset \d+: record of 1099511627776 bytes runs past"):
        verify_train_parts(data, "skip")
    empty = tmp_path / "empty"
    _write_part(empty / part_name(0), [(jpeg(0, 112), 0)])
    (empty / part_name(1)).write_bytes(b"")  # the port's converter can leave its last part empty
    data = verify_train_parts(empty)  # OneFlow's reader aborts on an empty part: it is left out of a view
    assert data.counts() == (1, 1) and data.left_out == [empty / part_name(1)]
    assert sorted(p.name for p in data.read_dir.iterdir()) == ["meta.json", part_name(0)]
    assert "1 part(s) of" in data.log_lines()[0] and "left out (part-00001;" in data.log_lines()[0]
    labels = np.array([r["label"] for r in read_part(empty / part_name(0))])
    assert labels.tolist() == [0]
