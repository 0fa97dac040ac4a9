"""`faceflow download`: file and http URLs, Range resume, sha256, zip/tar unpacking, no-network errors."""
from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from faceflow.cli.main import main as faceflow_main
from faceflow.data.download import download_dataset, fetch
from faceflow.errors import DataFormatError, FaceflowError

FILES = {"train.rec": bytes(range(256)) * 300, "train.idx": b"0\t0\n", "property": b"3,112,112\n", "lfw.bin": b"b" * 999}


def _zip_bytes(prefix: str = "faces_emore/") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in FILES.items():
            bundle.writestr(prefix + name, data)
    return buffer.getvalue()


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in FILES.items():
            info = tarfile.TarInfo(f"glint360k/{name}")
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _assert_dataset(out: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name, data in FILES.items():
        assert (out / name).read_bytes() == data


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload`; the first `cut_first` request sends only half of the body, then hangs up."""

    payload = b""
    requests: list[str | None] = []
    cut_first = False

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        cls = type(self)
        cls.requests.append(self.headers.get("Range"))
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}")
        else:
            self.send_response(200)
        body = cls.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cut_first and len(cls.requests) == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    """A local HTTP server on 127.0.0.1 honouring Range requests."""
    _RangeHandler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_file_url_zip_is_unpacked_to_the_dataset_root(tmp_path: Path) -> None:
    archive = tmp_path / "faces_emore.zip"
    archive.write_bytes(_zip_bytes())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = tmp_path / "datasets" / "emore"
    assert faceflow_main(["download", archive.as_uri(), str(out), "--sha256", digest]) == 0
    _assert_dataset(out)


def test_http_tar_gz_with_resume_after_interruption(tmp_path: Path, server) -> None:
    _RangeHandler.payload = _tar_bytes()
    _RangeHandler.cut_first = True
    url = f"http://127.0.0.1:{server.server_port}/glint360k.tar.gz"
    digest = hashlib.sha256(_RangeHandler.payload).hexdigest()
    out = tmp_path / "datasets" / "glint360k"
    with pytest.raises(FaceflowError, match="interrupted"):
        download_dataset(url, out, digest, cache_dir=tmp_path / "cache", timeout=5)
    assert not out.exists(), "an interrupted download must not leave a dataset directory"
    (part,) = (tmp_path / "cache").glob("*-glint360k.tar.gz.part")
    assert 0 < part.stat().st_size < len(_RangeHandler.payload)
    download_dataset(url, out, digest, cache_dir=tmp_path / "cache", timeout=5)
    assert _RangeHandler.requests == [None, f"bytes={len(_RangeHandler.payload) // 2}-"]
    _assert_dataset(out)


def test_sha256_mismatch_removes_the_download(tmp_path: Path, server) -> None:
    _RangeHandler.payload = _zip_bytes()
    _RangeHandler.cut_first = False
    url = f"http://127.0.0.1:{server.server_port}/emore.zip"
    with pytest.raises(DataFormatError, match="sha256 mismatch"):
        fetch(url, tmp_path / "cache", sha256="0" * 64, timeout=5)
    assert list((tmp_path / "cache").iterdir()) == []


def test_no_network_is_one_clear_line_and_no_dataset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "datasets" / "emore"
    url = "http://127.0.0.1:9/faces_emore.zip"  # discard port: connection refused, like an offline machine
    assert faceflow_main(["download", url, str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot download" in err and url in err
    assert not out.exists()


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(FaceflowError, match="unsupported URL scheme"):
        fetch("ftp://example.org/x.zip", tmp_path)
