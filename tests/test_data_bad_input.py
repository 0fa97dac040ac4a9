"""Crafted `.rec`/`.idx`/`property` files, image folders and full disks (issue 18 point 5): one line naming
the file and key/line, exit status 1, nothing run, nothing complete-looking left behind."""
from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from data_layer_samples import jpeg, make_dataset
from faceflow.cli.main import main as faceflow_main
from faceflow.data import convert
from faceflow.data.ofrecord import count_records
from faceflow.data.recordio import read_index
from faceflow.errors import DataFormatError

LABELS = [0, 0, 1, 1, 2, 2]
SHELL = "$(touch {marker})`touch {marker}`"  # text a shell would run: faceflow only ever parses it


def _cli(args: list[str], file_size: int | None = None, open_files: int | None = None) -> tuple[int, str]:
    """`faceflow ARGS` in a child process, optionally with RLIMIT_FSIZE (writes past it fail with EFBIG,
    as on a full disk) or RLIMIT_NOFILE: (exit status, stderr)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    done = subprocess.run([sys.executable, "-m", "faceflow.cli.main", *args], capture_output=True, text=True,
                          preexec_fn=limit, timeout=120)
    return done.returncode, done.stderr.strip()


def _in_process(capsys, args: list[str]) -> tuple[int, str]:
    status = faceflow_main(args)
    return status, capsys.readouterr().err.strip()


def _assert_one_line(status: int, err: str, command: str, *fragments: str) -> None:
    assert status == 1, err
    assert len(err.splitlines()) == 1 and err.startswith(f"faceflow {command}: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def _assert_nothing_left(folder: Path, *names: str) -> None:
    """`folder` holds exactly `names`: no output, no temporaries."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def _set_floats(path: Path, offset: int, values: list[float]) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(f"<{len(values)}f", *values))


def _header_fields(rec_dir: Path) -> tuple[int, int]:
    """(byte offset of the header record's two label floats, of the first identity record's)."""
    index = read_index(rec_dir / "train.idx")
    return 32, index[len(LABELS) + 1] + 32


def test_disk_full_while_writing_parts(tmp_path):
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    status, err = _cli(["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"], file_size=300)
    _assert_one_line(status, err, "convert", str(tmp_path / "of"), "part-00000", "File too large")
    _assert_nothing_left(tmp_path, "rec")


def test_disk_full_while_writing_meta_json(tmp_path, capsys, monkeypatch):
    """meta.json written to /dev/full: the kernel's own ENOSPC, after every part was written."""
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    monkeypatch.setattr(convert, "META_NAME", "/dev/full")  # out_dir / "/dev/full" is /dev/full
    status, err = _in_process(capsys, ["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"])
    _assert_one_line(status, err, "convert", str(tmp_path / "of"), "No space left on device")
    assert "(full): cannot write" in err  # the file it was writing: meta.json, here /dev/full
    _assert_nothing_left(tmp_path, "rec")


def test_disk_full_while_writing_the_index(tmp_path):
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    old = (tmp_path / "rec" / "train.idx").read_bytes()
    (tmp_path / "rec" / "train.idx").write_bytes(old[:-4])  # stale: `faceflow index` rewrites it
    status, err = _cli(["index", str(tmp_path / "rec")], file_size=20)
    _assert_one_line(status, err, "index", "train.idx", "File too large")
    assert (tmp_path / "rec" / "train.idx").read_bytes() == old[:-4], "the old index must stay as it was"
    _assert_nothing_left(tmp_path / "rec", "train.rec", "train.idx", "property")


def test_too_many_parts_for_the_open_file_limit(tmp_path):
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    status, err = _cli(["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--parts", "200", "--quiet"],
                       open_files=64)
    _assert_one_line(status, err, "convert", str(tmp_path / "of"), "of 200 parts", "Too many open files")
    _assert_nothing_left(tmp_path, "rec")


@pytest.mark.parametrize("field, values, message", [
    ("header", [7.0, 1e9], "key 0 (header record): lists 6 image and 999999993 identity keys but train.idx "
                           "holds only 10 keys"),
    ("header", [float("nan"), 10.0], "key 0 (header record): label [nan, 10.0] is not an integer key range"),
    ("header", [9.0, 3.0], "key 0 (header record): identity key range [9, 3) is empty or reversed"),
    ("identity", [float("nan"), 3.0], "key 7: identity record label [nan, 3.0] is not an image key range"),
    ("identity", [1.0, 3e38], "key 7: identity record label [1.0, 3.0000000054977558e+38] is not an image"),
])
def test_crafted_header_ranges(tmp_path, capsys, field, values, message):
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    (tmp_path / "rec" / "property").unlink()  # the class count then comes from the identity records
    header, identity = _header_fields(tmp_path / "rec")
    _set_floats(tmp_path / "rec" / "train.rec", header if field == "header" else identity, values)
    status, err = _in_process(capsys, ["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"])
    _assert_one_line(status, err, "convert", "train.rec", message)
    _assert_nothing_left(tmp_path, "rec")


@pytest.mark.parametrize("name, content, message", [
    ("train.idx", b"\xff\xfe\x00garbage\n", "train.idx: line 1: expected 'key<TAB>offset'"),
    ("train.idx", "0\t0\n1\t{shell}\n", "train.idx: line 2: expected 'key<TAB>offset'"),
    ("train.idx", "0\t0\n3\t0\n3\t0\n", "train.idx: key 3 is listed twice"),
    ("train.idx", "0\t0\n1\t99999999999999999999\n", "train.idx: line 2: expected 'key<TAB>offset'"),
    ("property", b"\xff\xd8\xff\xe0,112,112\n", "property: line 1: expected 'num_classes,height,width'"),
    ("property", "{shell},112,112\n", "property: line 1: expected 'num_classes,height,width'"),
    ("property", "1000000000000,112,112\n", "property: line 1: num_classes must be in [1, 2^31)"),
    ("property", "3,0,112\n", "property: line 1: image size 0x112 is not a size in pixels"),
])
def test_crafted_index_and_property(tmp_path, capsys, name, content, message):
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    marker = tmp_path / "marker"
    if isinstance(content, str):
        content = content.format(shell=SHELL.format(marker=marker)).encode()
    (tmp_path / "rec" / name).write_bytes(content)
    status, err = _in_process(capsys, ["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"])
    _assert_one_line(status, err, "convert", message)
    assert not marker.exists()
    _assert_nothing_left(tmp_path, "rec")
    if name == "train.idx":  # `faceflow index` replaces a broken index, naming what was wrong with it
        assert faceflow_main(["index", str(tmp_path / "rec")]) == 0
        assert message.split(": ", 1)[1] in capsys.readouterr().out
        assert faceflow_main(["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"]) == 0


def test_unreadable_image_header_without_property(tmp_path, capsys):
    """JPEG markers at both ends but no readable header: the image size cannot come from it."""
    make_dataset(tmp_path / "rec", LABELS, num_classes=3)
    (tmp_path / "rec" / "property").unlink()
    rec = tmp_path / "rec" / "train.rec"
    offset = read_index(tmp_path / "rec" / "train.idx")[1]
    data = bytearray(rec.read_bytes())
    size = struct.unpack_from("<I", data, offset + 4)[0] - 24
    data[offset + 32 + 3:offset + 32 + size - 2] = b"\x13" * (size - 5)
    rec.write_bytes(bytes(data))
    status, err = _in_process(capsys, ["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of"), "--quiet"])
    _assert_one_line(status, err, "convert", "train.rec: key 1")
    _assert_nothing_left(tmp_path, "rec")


def test_rec_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "rec" / "train.rec").mkdir(parents=True)
    (tmp_path / "rec" / "train.idx").write_text("0\t0\n")
    for command in (["index", str(tmp_path / "rec")], ["convert", "rec", str(tmp_path / "rec"), str(tmp_path / "of")]):
        status, err = _in_process(capsys, command)
        _assert_one_line(status, err, command[0], "train.rec: not a regular file")
    _assert_nothing_left(tmp_path, "rec")


def test_truncated_ofrecord_part_is_one_line(tmp_path):
    (tmp_path / "of").mkdir()
    (tmp_path / "of" / "part-00000").write_bytes(struct.pack("q", 3) + b"abc" + b"\x05\x00")
    with pytest.raises(DataFormatError, match="part-00000: byte offset 11: truncated record"):
        count_records(tmp_path / "of")


def test_image_folder_names_are_data(tmp_path, capsys):
    """Identity folders named like shell code or not in UTF-8 are packed byte for byte; a tab or newline,
    which identities.tsv cannot hold, is one line naming the folder."""
    marker = tmp_path / "marker"
    root = tmp_path / "faces"
    names = [SHELL.format(marker=marker).replace("/", "_"), os.fsdecode(b"caf\xe9")]
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(jpeg(i))
    assert faceflow_main(["pack", str(root), str(tmp_path / "out"), "--quiet"]) == 0
    listed = (tmp_path / "out" / "identities.tsv").read_bytes().splitlines()
    assert sorted(line.split(b"\t", 1)[1] for line in listed) == sorted(os.fsencode(n) for n in names)
    assert not marker.exists()
    (root / "tab\there").mkdir()
    (root / "tab\there" / "a.jpg").write_bytes(jpeg(3))
    status, err = _in_process(capsys, ["pack", str(root), str(tmp_path / "out2"), "--quiet"])
    _assert_one_line(status, err, "pack", "tab\there", "holds a tab or newline")
    assert not (tmp_path / "out2").exists()
    _assert_nothing_left(tmp_path, "faces", "out")
