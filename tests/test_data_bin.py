"""Verification .bin reader/writer, Python 2 pickles, and `faceflow convert bin`."""
from __future__ import annotations

import os
import pickle
import struct

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


# ---- crafted .bin files: the restricted unpickler (issue 18 points 1 and 5) ----

def _string(data: bytes) -> bytes:
    """A Python 2 `str` in a pickle (SHORT_BINSTRING / BINSTRING): bytes under encoding='bytes'."""
    return (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<i", len(data))) + data


def _python2_ndarray(data: bytes, shape: tuple[int, ...]) -> bytes:
    """The opcodes Python 2 numpy writes for a uint8 array (protocol 2): _reconstruct, then BUILD with
    (version, shape, dtype('u1') built from its own state, fortran, raw data as a str)."""
    dims = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _string(b"u1") + b"K\x00K\x01\x87R"
             b"(K\x03" + _string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _string(b"b") + b"\x87R"
            b"(K\x01" + dims + dtype + b"\x89" + _string(data) + b"tb")


def _python2_array_bin(images: list[bytes], flags: list[bool]) -> bytes:
    """A Python 2 cfp_fp/agedb_30-style .bin: images as (n, 1) uint8 arrays (cv2.imencode's shape)."""
    arrays = b"".join(_python2_ndarray(im, (len(im), 1)) for im in images)
    return b"\x80\x02](" + arrays + b"e](" + b"".join(b"\x88" if f else b"\x89" for f in flags) + b"e\x86."


def test_python2_numpy_array_bin_loads(tmp_path):
    images = [jpeg(i) for i in range(4)]
    raw = _python2_array_bin(images, [True, False])
    bins, flags = pickle.loads(raw, encoding="bytes")  # numpy itself reads the crafted file as Python 2 did
    assert [b.tobytes() for b in bins] == images and bins[0].shape == (len(images[0]), 1)
    (tmp_path / "cfp_fp.bin").write_bytes(raw)
    got, issame = read_bin(tmp_path / "cfp_fp.bin")
    assert got == images and issame.tolist() == [True, False]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_python3_layouts_load_with_every_protocol(tmp_path, protocol):
    images = [jpeg(i) for i in range(4)]
    arrays = [np.frombuffer(im, np.uint8).reshape(-1, 1) for im in images]
    for name, obj in {"bytes": (images, [True, False]), "arrays": (arrays, [True, False]),
                      "tuple": (tuple(images[:2]) + tuple(arrays[2:]), (True, False)),
                      "numpy flags": (images, [np.bool_(True), np.bool_(False)]),
                      "flag array": (images, np.array([True, False]))}.items():
        (tmp_path / "x.bin").write_bytes(pickle.dumps(obj, protocol=protocol))
        got, issame = read_bin(tmp_path / "x.bin")
        assert got == images and issame.tolist() == [True, False], name


class _RunsShell:
    """Pickles as os.system(command): what a hostile .bin does to a plain unpickler."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _evil_bins(marker) -> dict[str, tuple[bytes, str]]:
    """name -> (crafted .bin, expected message): each tries to create `marker`."""
    shell = f"touch {marker}"
    two = [jpeg(0), jpeg(1)]
    return {
        "os.system": (pickle.dumps((two, [_RunsShell(shell)]), protocol=2), "refused pickle global posix.system"),
        "os.system, protocol 0": (b"cos\nsystem\n(V" + shell.encode() + b"\ntR.", "refused pickle global os.system"),
        "builtins.eval": (b"\x80\x02cbuiltins\neval\nX" + struct.pack("<i", len(shell)) + shell.encode() + b"\x85R.",
                          "refused pickle global builtins.eval"),
        "numpy.load": (b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R.", "refused pickle global numpy.load"),
        "persistent id": (b"\x80\x02X\x01\x00\x00\x00xQ.", "refused pickle global a persistent id"),
        "object array": (pickle.dumps((np.array([shell, 1], dtype=object), [True]), protocol=2),
                         "array dtype 'O8'"),
        "ndarray called": (b"\x80\x02cnumpy\nndarray\nK\x01\x85R.", "not a verification pickle (TypeError"),
        "memo bomb": (b"\x80\x02K\x01r\x00\x00\x00\x40.", "memo index 1073741824 at byte offset 4"),
        "stand-in rewritten": (b"\x80\x02cnumpy\ndtype\n}X\x08\x00\x00\x00__call__K\x01sb.",
                               "not a verification pickle (AttributeError"),
    }


def test_the_crafted_bin_does_run_code_with_a_plain_unpickler(tmp_path):
    raw, _ = _evil_bins(tmp_path / "marker")["os.system"]
    pickle.loads(raw)
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("case", list(_evil_bins("M")))
def test_crafted_bin_runs_nothing(tmp_path, capsys, case):
    from faceflow.cli.main import main as faceflow_main
    marker = tmp_path / "marker"
    raw, message = _evil_bins(marker)[case]
    path = tmp_path / "lfw.bin"
    path.write_bytes(raw)
    assert faceflow_main(["convert", "bin", str(path), str(tmp_path / "val"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"faceflow convert: error: {path}: "), err
    assert message in err
    assert not marker.exists(), "the crafted .bin ran code"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfw.bin"], "output or temporaries left behind"
    images = [jpeg(i) for i in range(2)]
    write_bin(path, images, [True])  # the stand-ins are unharmed for the next file
    assert read_bin(path)[0] == images


@pytest.mark.parametrize("obj, message", [
    (([jpeg(0), 5], [True]), "bins[1]: expected encoded image bytes, got the int 5"),
    (([jpeg(0), np.zeros(4, np.float32)], [True]), "array dtype 'f4'"),
    (([jpeg(0), jpeg(1)], ["yes"]), "issame_list[0]: expected a bool, got str"),
    (([jpeg(0), jpeg(1)], [2]), "issame_list[0]: expected a bool, got the int 2"),
    ((7, [True]), "bins: expected a list, got the int 7"),
    ({"bins": []}, "expected a pickled (bins, issame_list) pair, got dict"),
])
def test_bin_members_of_the_wrong_type(tmp_path, capsys, obj, message):
    from faceflow.cli.main import main as faceflow_main
    path = tmp_path / "agedb_30.bin"
    path.write_bytes(pickle.dumps(obj, protocol=2))
    assert faceflow_main(["convert", "bin", str(path), str(tmp_path / "val"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err
    assert not (tmp_path / "val").exists()
