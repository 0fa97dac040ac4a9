"""Verification .bin reader/writer, Python 2 pickles, and `faceflow convert bin`."""
from __future__ import annotations

import pickle

import numpy as np
import pytest


from data_layer_samples import jpeg
from faceflow.cli.convert import main as convert_main
from faceflow.data.ofrecord import read_records
from faceflow.data.verification_bin import read_bin, write_bin
from faceflow.errors import DataFormatError


def test_round_trip(tmp_path):
    images = [jpeg(i) for i in range(6)]
    write_bin(tmp_path / "lfw.bin", images, [True, False, True])
    got, issame = read_bin(tmp_path / "lfw.bin")
    assert got == images
    assert issame.dtype == bool and issame.tolist() == [True, False, True]
    with open(tmp_path / "lfw.bin", "rb") as f:
        bins, flags = pickle.load(f)
    assert bins == images and flags == [True, False, True]


def _python2_pickle(images: list[bytes], flags: list[bool]) -> bytes:
    """Protocol-2 pickle with Python 2 `str` images (SHORT_BINSTRING), as InsightFace's old .bin files."""
    out = b"\x80\x02](" + b"".join(b"U" + bytes([len(im)]) + im for im in images) + b"e]("
    out += b"".join(b"\x88" if f else b"\x89" for f in flags) + b"e\x86."
    return out


def test_python2_pickle_needs_bytes_fallback(tmp_path):
    images = [b"\xff\xd8\xff\xe0 one \xff\xd9", b"\xff\xd8\xff\xe0 two \xff\xd9"]
    raw = _python2_pickle(images, [False])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(raw)
    (tmp_path / "old.bin").write_bytes(raw)
    got, issame = read_bin(tmp_path / "old.bin")
    assert got == images and issame.tolist() == [False]


@pytest.mark.parametrize("count, flags, message", [(3, [True], "odd image count 3"),
                                                   (4, [True], "issame_list has 1 entries but there are 4 images")])
def test_bad_bins(tmp_path, count, flags, message):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([jpeg(i) for i in range(count)], flags)))
    with pytest.raises(DataFormatError, match=message) as err:
        read_bin(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataFormatError):
        convert_main(["bin", str(path), str(tmp_path / "out"), "--quiet"])
    assert not (tmp_path / "out").exists()


def test_convert_bin_duplicates_issame_on_both_images(tmp_path, capsys):
    images = [jpeg(i) for i in range(4)]
    write_bin(tmp_path / "cfp.bin", images, [False, True])
    assert convert_main(["bin", str(tmp_path / "cfp.bin"), str(tmp_path / "val"), "--quiet"]) == 0
    assert "4 records, 2 pairs" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == ["meta.json", "part-00000"]
    records = list(read_records(tmp_path / "val"))
    assert [r["encoded"] for r in records] == images
    assert np.array_equal([r["issame"] for r in records], [0, 0, 1, 1])


def test_convert_bin_undecodable_image(tmp_path, capsys):
    from faceflow.cli.main import main as faceflow_main
    write_bin(tmp_path / "agedb.bin", [jpeg(0), jpeg(1), jpeg(2), b"garbage"], [True, False])
    assert faceflow_main(["convert", "bin", str(tmp_path / "agedb.bin"), str(tmp_path / "val"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("faceflow convert: error: ") and len(err.splitlines()) == 1
    assert "agedb.bin: image 3 (pair 1): undecodable image" in err
    assert not (tmp_path / "val").exists()
