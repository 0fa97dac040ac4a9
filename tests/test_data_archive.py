"""Crafted archives and downloads (issue 18 point 3): nothing lands outside the dataset folder, bombs are
capped, each dataset has its own download cache and an unverifiable short download is never cached."""
from __future__ import annotations

import http.server
import io
import stat
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from faceflow.cli.main import main as faceflow_main

DATA = {"train.rec": b"r" * 2000, "train.idx": b"0\t0\n", "property": b"2,112,112\n"}


def _tar(members: list[tuple[str, str, bytes | str]], compress: str = "gz") -> bytes:
    """A tar of (name, kind, data or link target) members; kind: file, dir, symlink, hardlink, chardev, fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compress}") as bundle:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                         "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = data
                bundle.addfile(info)
            elif kind == "file":
                info.size = len(data)
                bundle.addfile(info, io.BytesIO(data))
            else:
                bundle.addfile(info)
    return buffer.getvalue()


def _zip(members: list[tuple[str, int, bytes]]) -> bytes:
    """A zip of (name, unix mode, data) members (a symlink's data is its target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, mode, data in members:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            bundle.writestr(info, data)
    return buffer.getvalue()


def _dataset(prefix: str = "emore/") -> list[tuple[str, str, bytes]]:
    return [(prefix + name, "file", data) for name, data in DATA.items()]


def _zip_dataset(prefix: str = "emore/") -> list[tuple[str, int, bytes]]:
    return [(prefix + name, stat.S_IFREG | 0o644, data) for name, data in DATA.items()]


def _download(tmp_path: Path, capsys, payload: bytes, name: str, *options: str) -> tuple[int, str, Path]:
    """Run `faceflow download file://ARCHIVE DATASETS/emore`: (exit status, stderr, dataset folder)."""
    archive = tmp_path / "mirror" / name
    archive.parent.mkdir(exist_ok=True)
    archive.write_bytes(payload)
    out = tmp_path / "work" / "datasets" / "emore"
    status = faceflow_main(["download", archive.as_uri(), str(out), *options])
    return status, capsys.readouterr().err.strip(), out


def _assert_refused(tmp_path: Path, status: int, err: str, out: Path, *expected: str) -> None:
    """One line naming the archive and member, exit 1, nothing outside, no dataset, no temporaries."""
    assert status == 1
    assert len(err.splitlines()) == 1 and err.startswith("faceflow download: error: "), err
    for text in expected:
        assert text in err, err
    assert not (tmp_path / "outside").exists() and not (tmp_path / "work" / "outside").exists(), "escaped"
    assert not out.exists(), "a dataset folder was published"
    assert sorted(p.name for p in out.parent.iterdir()) == [".downloads"], "temporaries left behind"


CRAFTED_TARS = {
    "dot-dot name": (_dataset() + [("emore/../../outside", "file", b"x")], "'..' in its name"),
    "absolute name": (_dataset() + [("/tmp/outside", "file", b"x")], "absolute or empty name"),
    "link outside": (_dataset() + [("emore/escape", "symlink", "../../../outside")], "outside the dataset folder"),
    "absolute link": (_dataset() + [("emore/escape", "symlink", "/etc")], "link to an absolute path"),
    "write through a link": ([("emore/d", "dir", b""), ("emore/d/up", "symlink", ".."),
                              ("emore/d/up/up2", "symlink", "../..")] + _dataset(), "outside the dataset folder"),
    "hard link": (_dataset() + [("emore/hard", "hardlink", "emore/train.rec")], "hardlinks are not unpacked"),
    "device": (_dataset() + [("emore/tty", "chardev", b"")], "devices are not unpacked"),
    "fifo": (_dataset() + [("emore/pipe", "fifo", b"")], "devices are not unpacked"),
    "replaces a member": (_dataset() + [("emore/train.rec", "symlink", "property")], "listed twice"),
    "link outside once re-rooted": (_dataset() + [("emore/secret", "symlink", "../secret"), ("secret", "file", b"s")],
                                    "link to outside the dataset folder"),
}


@pytest.mark.parametrize("case", list(CRAFTED_TARS))
def test_crafted_tar_stays_inside(tmp_path, capsys, case):
    members, message = CRAFTED_TARS[case]
    status, err, out = _download(tmp_path, capsys, _tar(members), "emore.tar.gz")
    _assert_refused(tmp_path, status, err, out, "emore.tar.gz", message)


CRAFTED_ZIPS = {
    "dot-dot name": (_zip_dataset() + [("emore/../../outside", stat.S_IFREG | 0o644, b"x")], "'..' in its name"),
    "absolute name": (_zip_dataset() + [("/outside", stat.S_IFREG | 0o644, b"x")], "absolute or empty name"),
    "symlink in the attributes": (_zip_dataset() + [("emore/escape", stat.S_IFLNK | 0o777, b"../../../outside")],
                                  "outside the dataset folder"),
    "device in the attributes": (_zip_dataset() + [("emore/tty", stat.S_IFCHR | 0o600, b"")],
                                 "devices are not unpacked"),
}


@pytest.mark.parametrize("case", list(CRAFTED_ZIPS))
def test_crafted_zip_stays_inside(tmp_path, capsys, case):
    members, message = CRAFTED_ZIPS[case]
    status, err, out = _download(tmp_path, capsys, _zip(members), "emore.zip")
    _assert_refused(tmp_path, status, err, out, "emore.zip", message)


def test_links_inside_the_dataset_are_kept(tmp_path, capsys):
    members = _dataset() + [("emore/lfw.bin", "file", b"b"), ("emore/val", "dir", b""),
                            ("emore/val/lfw.bin", "symlink", "../lfw.bin")]
    status, err, out = _download(tmp_path, capsys, _tar(members), "emore.tar.gz")
    assert status == 0, err
    assert (out / "val" / "lfw.bin").is_symlink() and (out / "val" / "lfw.bin").read_bytes() == b"b"
    assert (out / "train.rec").read_bytes() == DATA["train.rec"]


def test_caps_on_bytes_and_members(tmp_path, capsys):
    payload = _tar(_dataset())
    status, err, out = _download(tmp_path, capsys, payload, "emore.tar.gz", "--max-unpacked-bytes", "1000")
    _assert_refused(tmp_path, status, err, out, "unpacks to more than 1000 bytes", "--max-unpacked-bytes")
    status, err, out = _download(tmp_path, capsys, payload, "emore.tar.gz", "--max-members", "2")
    _assert_refused(tmp_path, status, err, out, "more than 2 members", "--max-members")


def _declared_size(archive: bytes, kind: str, size: int) -> bytes:
    """The archive with its first member's declared size rewritten to `size` (a bomb's header; no data)."""
    if kind == "tar":
        header = bytearray(archive[:512])
        header[124:136] = f"{size:011o}\0".encode()
        header[148:156] = b" " * 8
        header[148:156] = f"{sum(header):06o}\0 ".encode()
        return bytes(header) + archive[512:]
    central = archive.rindex(b"PK\x01\x02")  # the central directory entry's uncompressed size, at +24
    return archive[:central + 24] + size.to_bytes(4, "little") + archive[central + 28:]


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_archive_bomb_stopped_by_the_default_cap(tmp_path, capsys, kind):
    """A member declaring 4 GB in an archive of a few hundred bytes: refused before a byte is written."""
    if kind == "tar":
        payload = _declared_size(_tar([("emore/train.rec", "file", b"\0" * 512)], compress=""), "tar", 4 << 30)
    else:
        payload = _declared_size(_zip([("emore/train.rec", stat.S_IFREG | 0o644, b"\0" * 512)]), "zip", (4 << 30) - 1)
    status, err, out = _download(tmp_path, capsys, payload, f"bomb.{kind}")
    _assert_refused(tmp_path, status, err, out, f"bomb.{kind}", "unpacks to more than 1073741824 bytes")


class _Files(http.server.BaseHTTPRequestHandler):
    """Serves `files` {path: bytes}; paths in `cut` get half their body once, then a hang-up; paths in
    `no_length` are sent without Content-Length (HTTP/1.0, the end is the connection's close)."""

    files: dict[str, bytes] = {}
    cut: set[str] = set()
    no_length: set[str] = set()
    requests: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        cls = type(self)
        cls.requests.append((self.path, self.headers.get("Range")))
        body = cls.files[self.path]
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if self.path not in cls.no_length:
            self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in cls.cut:
            cls.cut.discard(self.path)
            self.wfile.write(body[start:start + (len(body) - start) // 2])
        else:
            self.wfile.write(body[start:])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def files_server():
    _Files.files, _Files.cut, _Files.no_length, _Files.requests = {}, set(), set(), []
    _Files.protocol_version = "HTTP/1.0"
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_two_datasets_with_the_same_archive_name_never_share_a_download(tmp_path, capsys, files_server):
    a, b = _tar(_dataset("a/")), _tar([("b/" + n, "file", d + b"-b") for n, d in DATA.items()])
    _Files.files = {"/mirror1/data.tar.gz": a, "/mirror2/data.tar.gz": b}
    _Files.cut = {"/mirror1/data.tar.gz"}
    datasets = tmp_path / "datasets"
    assert faceflow_main(["download", f"{files_server}/mirror1/data.tar.gz", str(datasets / "a")]) == 1
    assert "interrupted" in capsys.readouterr().err
    assert faceflow_main(["download", f"{files_server}/mirror2/data.tar.gz", str(datasets / "b")]) == 0
    assert faceflow_main(["download", f"{files_server}/mirror1/data.tar.gz", str(datasets / "a")]) == 0
    assert (datasets / "a" / "train.rec").read_bytes() == DATA["train.rec"]
    assert (datasets / "b" / "train.rec").read_bytes() == DATA["train.rec"] + b"-b"
    assert _Files.requests == [("/mirror1/data.tar.gz", None), ("/mirror2/data.tar.gz", None),
                               ("/mirror1/data.tar.gz", f"bytes={len(a) // 2}-")]
    caches = {p.parent.name: p.name for p in (datasets / ".downloads").rglob("*") if p.is_file()}
    assert set(caches) == {"a", "b"} and all(name.endswith("-data.tar.gz") for name in caches.values())


def test_short_download_without_length_or_sha256_is_reported_not_cached(tmp_path, capsys, files_server):
    archive = _tar(_dataset())
    _Files.files = {"/emore.tar.gz": archive}
    _Files.no_length, _Files.cut = {"/emore.tar.gz"}, {"/emore.tar.gz"}
    out = tmp_path / "datasets" / "emore"
    assert faceflow_main(["download", f"{files_server}/emore.tar.gz", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "emore.tar.gz" in err and "may be cut short" in err, err
    assert not out.exists() and not [p for p in (out.parent / ".downloads").rglob("*") if p.is_file()]
    assert faceflow_main(["download", f"{files_server}/emore.tar.gz", str(out)]) == 0  # whole this time
    assert "announced no length and no --sha256" in capsys.readouterr().err
    assert (out / "train.rec").read_bytes() == DATA["train.rec"]
    assert not [p for p in (out.parent / ".downloads").rglob("*") if p.is_file()], "kept as if complete"
    assert _Files.requests == [("/emore.tar.gz", None)] * 2
