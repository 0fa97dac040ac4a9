"""`faceflow pack`: folder-per-identity tree -> InsightFace-layout dataset."""
from __future__ import annotations

import io


import numpy as np
from PIL import Image

from data_layer_samples import decode, jpeg, pixels
from faceflow.cli.main import main as faceflow_main
from faceflow.data.recordio import RecordDataset, read_property


def _tree(root, size=16):
    files = {}
    for c, name in enumerate(["alice", "bob", "carol"]):
        (root / name).mkdir(parents=True)
        jpg = root / name / "a.jpg"
        jpg.write_bytes(jpeg(c, size))
        png = root / name / "b.png"
        Image.fromarray(pixels(10 + c, size)).save(png)
        files[name] = (jpg, png)
    (root / "empty").mkdir()
    return files


def test_pack_tree(tmp_path, capsys):
    files = _tree(tmp_path / "tree")
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "out"), "--quiet"]) == 0
    assert "6 images, 3 classes, 16x16, 3 re-encoded" in capsys.readouterr().out
    assert read_property(tmp_path / "out") == (3, 16, 16)
    assert (tmp_path / "out" / "identities.tsv").read_text() == "0\talice\n1\tbob\n2\tcarol\n"
    with RecordDataset(tmp_path / "out") as dataset:
        assert dataset.identity_ranges.tolist() == [[1, 3], [3, 5], [5, 7]]
        records = list(dataset)
    assert [r.label for r in records] == [0, 0, 1, 1, 2, 2]
    for record, (name, (jpg, png)) in zip(records[::2], files.items()):
        assert record.image == jpg.read_bytes(), "JPEG files are stored unchanged"
    for record, (name, (jpg, png)) in zip(records[1::2], files.items()):
        expected = io.BytesIO()
        Image.open(png).convert("RGB").save(expected, "JPEG", quality=95)
        assert record.image == expected.getvalue(), "other formats are re-encoded as JPEG quality 95"
        diff = np.abs(decode(record.image).astype(int) - np.asarray(Image.open(png)).astype(int))
        assert diff.mean() < 10


def test_pack_rejects_mixed_sizes(tmp_path, capsys):
    _tree(tmp_path / "tree")
    (tmp_path / "tree" / "bob" / "c.jpg").write_bytes(jpeg(7, 24))
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "bob/c.jpg: image is 24x24, the first image was 16x16" in err
    assert not (tmp_path / "out" / "train.rec").exists()


def test_pack_rejects_undecodable_and_empty(tmp_path, capsys):
    (tmp_path / "tree" / "x").mkdir(parents=True)
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "no identity folders with images" in capsys.readouterr().err
    (tmp_path / "tree" / "x" / "broken.png").write_bytes(b"\x89PNG garbage")
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "broken.png (record key 1): undecodable image" in capsys.readouterr().err


def test_a_failed_pack_keeps_the_previous_dataset_and_other_files(tmp_path, capsys):
    _tree(tmp_path / "tree")
    out = tmp_path / "out"
    out.mkdir()
    (out / "lfw.bin").write_bytes(b"the user's own file")
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(out), "--quiet"]) == 0
    before = {name: (out / name).read_bytes() for name in ("train.rec", "train.idx", "property", "identities.tsv")}
    (tmp_path / "tree" / "bob" / "c.jpg").write_bytes(b"\xff\xd8 not a jpeg \xff\xd9")
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(out), "--quiet"]) == 1
    assert "bob/c.jpg (record key 5)" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before, "the failed pack replaced nothing"
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, "lfw.bin"]), "no staging folder left"
    (tmp_path / "tree" / "bob" / "c.jpg").unlink()
    (tmp_path / "tree" / "dave").mkdir()
    (tmp_path / "tree" / "dave" / "a.jpg").write_bytes(jpeg(9, 16))
    assert faceflow_main(["pack", str(tmp_path / "tree"), str(out), "--quiet"]) == 0
    assert read_property(out) == (4, 16, 16)
    assert (out / "lfw.bin").read_bytes() == b"the user's own file"
