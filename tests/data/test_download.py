"""Downloads against a local HTTP server (127.0.0.1, no real network): resume, checksums, errors."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from detector.data import download as dl
from detector.data.download import DownloadError, RemoteFile, download_file, extract_archive

PAYLOAD = bytes(range(256)) * 400  # 100 kB
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD at /data.bin with Range support; can ignore Range or cut a response short."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.honour_range = True
        self.cut_after: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append(dict(self.headers))
                if self.path != "/data.bin":
                    self.send_error(404)
                    return
                start = 0
                header = self.headers.get("Range")
                if header and server.honour_range:
                    start = int(header.removeprefix("bytes=").split("-")[0])
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_fresh_download_is_verified(server, tmp_path):
    path = download_file(RemoteFile(f"{server.url}/data.bin", md5=MD5), tmp_path, progress=False)
    assert path == tmp_path / "data.bin" and path.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    download_file(RemoteFile(f"{server.url}/data.bin", md5=MD5), tmp_path, progress=False)
    assert len(server.requests) == 1  # a valid file already there is not fetched again


def test_resume_after_a_broken_connection(server, tmp_path):
    remote = RemoteFile(f"{server.url}/data.bin", md5=MD5)
    server.cut_after = 30_000
    with pytest.raises(DownloadError, match="run again to resume"):
        download_file(remote, tmp_path, progress=False)
    part = tmp_path / "data.bin.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    done = part.stat().st_size

    server.cut_after = None
    path = download_file(remote, tmp_path, progress=False)
    assert server.requests[-1]["Range"] == f"bytes={done}-"
    assert path.read_bytes() == PAYLOAD


def test_part_already_complete_gets_416_and_is_kept(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    path = download_file(RemoteFile(f"{server.url}/data.bin", md5=MD5), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must not stay in front")
    path = download_file(RemoteFile(f"{server.url}/data.bin", md5=MD5), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD


def test_checksum_mismatch_removes_the_part(server, tmp_path):
    with pytest.raises(DownloadError, match="MD5 mismatch") as err:
        download_file(RemoteFile(f"{server.url}/data.bin", md5="0" * 32), tmp_path, progress=False)
    assert "data.bin" in str(err.value)
    assert not (tmp_path / "data.bin.part").exists() and not (tmp_path / "data.bin").exists()


def test_size_is_checked_when_no_md5_is_known(server, tmp_path):
    with pytest.raises(DownloadError, match="size mismatch"):
        download_file(RemoteFile(f"{server.url}/data.bin", size=len(PAYLOAD) + 1), tmp_path, progress=False)
    path = download_file(RemoteFile(f"{server.url}/data.bin", size=len(PAYLOAD)), tmp_path, progress=False)
    assert path.stat().st_size == len(PAYLOAD)


def test_http_error_and_offline_are_one_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(RemoteFile(f"{server.url}/missing.bin"), tmp_path, progress=False)
    with socket.socket() as s:  # a port nobody listens on: connection refused, as when offline
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="cannot download") as err:
        download_file(RemoteFile(f"http://127.0.0.1:{closed_port}/data.bin"), tmp_path, progress=False)
    assert "\n" not in str(err.value) and str(closed_port) in str(err.value)


def test_offline_via_monkeypatched_urlopen(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise dl.urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError, match="Name or service not known.*--base-url"):
        download_file(RemoteFile("http://images.cocodataset.org/zips/val2017.zip"), tmp_path, progress=False)


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_extract_tar_and_zip_once_and_refuse_escapes(tmp_path):
    tar_path = tmp_path / "a.tar"
    tar_path.write_bytes(_tar_bytes({"VOCdevkit/VOC2007/x.txt": b"x"}))
    extract_archive(tar_path, tmp_path / "out")
    assert (tmp_path / "out" / "VOCdevkit" / "VOC2007" / "x.txt").read_bytes() == b"x"
    (tmp_path / "out" / "VOCdevkit" / "VOC2007" / "x.txt").unlink()
    extract_archive(tar_path, tmp_path / "out")  # marker: not extracted again
    assert not (tmp_path / "out" / "VOCdevkit" / "VOC2007" / "x.txt").exists()

    zip_path = tmp_path / "b.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("val2017/1.jpg", b"jpg")
    extract_archive(zip_path, tmp_path / "out")
    assert (tmp_path / "out" / "val2017" / "1.jpg").read_bytes() == b"jpg"

    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar_bytes({"../escaped.txt": b"!"}))
    with pytest.raises(DownloadError, match="leads outside") as err:
        extract_archive(evil, tmp_path / "out2")
    assert "evil.tar" in str(err.value) and not (tmp_path / "escaped.txt").exists()


def test_download_voc_from_a_file_url_mirror(monkeypatch, tmp_path):
    archive = _tar_bytes({"VOCdevkit/VOC2007/ImageSets/Main/test.txt": b"000001\n"})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "VOCtest_06-Nov-2007.tar").write_bytes(archive)
    original = dl.VOC_ARCHIVES["2007-test"]
    monkeypatch.setitem(dl.VOC_ARCHIVES, "2007-test", RemoteFile(original.url, md5=hashlib.md5(archive).hexdigest()))
    devkit = dl.download_voc(tmp_path / "voc", archives=["2007-test"], base_url=mirror.as_uri(), progress=False)
    assert devkit == tmp_path / "voc" / "VOCdevkit"
    assert (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text() == "000001\n"
    assert (tmp_path / "voc" / "downloads" / "VOCtest_06-Nov-2007.tar").is_file()
    with pytest.raises(DownloadError, match="unknown VOC archive"):
        dl.download_voc(tmp_path / "voc", archives=["1999-test"], progress=False)


def test_published_checksums_are_well_formed():
    for remote in (*dl.VOC_ARCHIVES.values(), *dl.COCO_ARCHIVES.values()):
        assert remote.md5 is not None and len(remote.md5) == 32 and int(remote.md5, 16) >= 0
        assert remote.url.startswith("http://")
