"""Resumable, checksummed downloads of the public datasets, and their extraction.

- Resumable: bytes go to `{file}.part`; a later run asks the server for the rest with an HTTP
  `Range` header and appends (a server that answers 200 instead of 206 gets a fresh start).
- Checked: the MD5 of the whole file when it is known, else its size; a mismatch removes the
  partial file (resuming a corrupt file cannot repair it) and raises `DownloadError`.
- A progress bar (tqdm) per file; extraction of .tar/.zip archives that refuses members
  leading outside the destination, with a marker file so a finished extraction is skipped.
- Offline or unreachable server: one `DownloadError` whose message names the URL and says
  what to do; the scripts print it as a single `error: ...` line.

`base_url` replaces the folder part of every URL (a mirror, or `file:///path/` for archives
already copied to the machine); the file name stays the same.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from detector.data.errors import DatasetError


class DownloadError(DatasetError):
    """A download or extraction that failed; the message names the URL or file."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch.

    Attributes:
        url: where it is.
        md5: its published MD5 hex digest, when known.
        size: its size in bytes, checked instead when no MD5 is known.
    """

    url: str
    md5: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def at(self, base_url: str | None) -> str:
        """The URL of this file under `base_url` (a mirror), or its own URL."""
        return self.url if not base_url else base_url.rstrip("/") + "/" + self.filename


# MD5s of the VOC archives: those torchvision's datasets/voc.py checks (from the VOC site's files).
VOC_ARCHIVES: dict[str, RemoteFile] = {
    "2007-trainval": RemoteFile(
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
        md5="c52e279531787c972589f7e41ab4ae64",
    ),
    "2007-test": RemoteFile(
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
        md5="b6e924de25625d8de591ea690078ad9f",
    ),
    "2012-trainval": RemoteFile(
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        md5="6cd6e144f989b92b3379bac3b3de84fd",
    ),
}

# cocodataset.org publishes no checksums. These MD5s are the ones other projects check the
# official zips against (e.g. PaddleDetection's ppdet/utils/download.py, NVIDIA's COCO
# download scripts), all agreeing; a changed file on the server will fail loudly here.
COCO_ARCHIVES: dict[str, RemoteFile] = {
    "train2017": RemoteFile("http://images.cocodataset.org/zips/train2017.zip", md5="cced6f7f71b7629ddf16f17bbcfab6b2"),
    "val2017": RemoteFile("http://images.cocodataset.org/zips/val2017.zip", md5="442b8da7639aecaf257c1dceb8ba8c80"),
    "annotations": RemoteFile(
        "http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        md5="f4bbac642086de4f52a3fdda2de5fa2c",
    ),
}

_CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError)


def md5sum(path: Path, chunk_size: int = _CHUNK) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, remote: RemoteFile) -> str | None:
    """None when `path` matches the expected MD5 (or size), else what is wrong, in words."""
    if remote.md5 is not None:
        actual = md5sum(path)
        return None if actual == remote.md5 else f"MD5 mismatch: expected {remote.md5}, got {actual}"
    if remote.size is not None:
        actual_size = path.stat().st_size
        return None if actual_size == remote.size else f"size mismatch: expected {remote.size} bytes, got {actual_size}"
    return None


def _offline_message(err: BaseException) -> str:
    reason = getattr(err, "reason", err)
    return (
        f"cannot download ({reason}); check the network connection, or pass a mirror or a "
        "file:// folder holding the archives with --base-url"
    )


def download_file(
    remote: RemoteFile,
    folder: str | os.PathLike,
    *,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch `remote` into `folder` (resuming a previous `.part`) and check it.

    Returns:
        The path of the complete, verified file. A file already there and valid is kept.

    Raises:
        DownloadError: offline, an HTTP error, a broken connection (run again to resume), or a
            checksum/size mismatch (the partial file is removed).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.filename
    url = remote.at(base_url)
    if final.is_file():
        problem = _verify(final, remote)
        if problem is None:
            return final
        raise DownloadError(final, f"{problem}; delete the file and run again")

    part = final.with_name(final.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "detector-download/1.0"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    complete = False
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the .part is already whole
            complete = True
        else:
            raise DownloadError(url, f"HTTP {err.code} {err.reason}") from None
    except _NETWORK_ERRORS as err:
        raise DownloadError(url, _offline_message(err)) from None

    if not complete:
        with response:
            status = getattr(response, "status", None)
            resumed = bool(offset) and status == 206
            if not resumed:
                offset = 0  # the server sent the whole file (or ignores Range): start over
            length = response.headers.get("Content-Length") if response.headers else None
            expected = offset + int(length) if length and length.isdigit() else None
            received = _stream(response, part, offset, expected or remote.size, url, remote.filename, progress)
            if expected is not None and received < expected:  # the server closed early
                raise DownloadError(
                    url, f"connection lost after {received} of {expected} bytes; run again to resume from {part.name}"
                )

    problem = _verify(part, remote)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(final, f"{problem} (the partial file was removed; run again)")
    part.replace(final)
    return final


def _stream(response, part: Path, offset: int, total: int | None, url: str, name: str, progress: bool) -> int:
    """Append the response body to `part`; returns the size of `part` afterwards."""
    from tqdm import tqdm

    received = offset
    mode = "ab" if offset else "wb"
    with part.open(mode) as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
        try:
            while block := response.read(_CHUNK):
                f.write(block)
                received += len(block)
                bar.update(len(block))
        except (*_NETWORK_ERRORS, OSError, http.client.HTTPException) as err:  # e.g. IncompleteRead
            raise DownloadError(
                url, f"connection lost after {received} bytes ({err}); run again to resume from {part.name}"
            ) from None
    return received


def _safe_member(name: str, archive: Path) -> None:
    parts = Path(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DownloadError(archive, f"archive member {name!r} leads outside the destination (refused)")


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a .tar(.gz) or .zip into `dest`, once; members leading outside `dest` are refused."""
    archive, dest = Path(archive), Path(dest)
    marker = dest / f".{archive.name}.extracted"
    if marker.is_file():
        return
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _safe_member(name, archive)
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    _safe_member(member.name, archive)
                tf.extractall(dest, filter="data")
        else:
            raise DownloadError(archive, "not a .zip or .tar archive")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DownloadError(archive, f"cannot extract ({err})") from None
    marker.write_text("ok\n")


def fetch_and_extract(
    remotes: Iterable[RemoteFile],
    root: str | os.PathLike,
    *,
    base_url: str | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> None:
    """Download each file into {root}/downloads, then extract it into {root}."""
    root = Path(root)
    for remote in remotes:
        archive = download_file(remote, root / "downloads", base_url=base_url, progress=progress)
        extract_archive(archive, root)
        if not keep_archives:
            archive.unlink()


def download_voc(
    root: str | os.PathLike,
    *,
    archives: Iterable[str] = ("2007-trainval", "2007-test", "2012-trainval"),
    base_url: str | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """Pascal VOC into {root}/VOCdevkit/VOC2007 and VOC2012; returns {root}/VOCdevkit.

    Args:
        archives: keys of `VOC_ARCHIVES`.
    """
    unknown = [a for a in archives if a not in VOC_ARCHIVES]
    if unknown:
        raise DownloadError(root, f"unknown VOC archive(s) {unknown}; choose from {sorted(VOC_ARCHIVES)}")
    fetch_and_extract(
        [VOC_ARCHIVES[a] for a in archives], root, base_url=base_url, progress=progress, keep_archives=keep_archives
    )
    return Path(root) / "VOCdevkit"


def download_coco(
    root: str | os.PathLike,
    *,
    parts: Iterable[str] = ("annotations", "val2017", "train2017"),
    base_url: str | None = None,
    progress: bool = True,
    keep_archives: bool = True,
) -> Path:
    """COCO 2017 into {root}/annotations, {root}/train2017, {root}/val2017; returns root.

    Args:
        parts: keys of `COCO_ARCHIVES`.
    """
    unknown = [p for p in parts if p not in COCO_ARCHIVES]
    if unknown:
        raise DownloadError(root, f"unknown COCO part(s) {unknown}; choose from {sorted(COCO_ARCHIVES)}")
    fetch_and_extract(
        [COCO_ARCHIVES[p] for p in parts], root, base_url=base_url, progress=progress, keep_archives=keep_archives
    )
    return Path(root)

