"""Files the package writes and reads: atomic writes, and JSON with one clear error and its value types.

Atomic: a file is written under a temporary name next to its target (``.<name>.<pid>.tmp``: the
same file system, so the rename is atomic; one per process, so processes that write the same file
do not clash) and renamed over the target with `os.replace`, which POSIX makes atomic. A reader
sees the old file or the whole new one, never half of one. With ``durable=True`` the data and the
rename are also flushed to disk (fsync), so that a power cut keeps one of the two.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from numbers import Integral, Real
from pathlib import Path
from typing import Any

_TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yields the temporary path to write; on leaving the block it replaces `path` (removed on error).

    Temporary files of `path` left by processes that were killed while writing are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, text_or_bytes: str | bytes, *, durable: bool = False) -> Path:
    """Write text (UTF-8) or bytes to `path` atomically (see the module doc); returns the path."""
    with atomic_path(path, durable=durable) as tmp:
        if isinstance(text_or_bytes, bytes):
            tmp.write_bytes(text_or_bytes)
        else:
            tmp.write_text(text_or_bytes, encoding="utf-8")
    return Path(path)


class WriteError(OSError):
    """A file or folder could not be written; the one-line message names the path and the cause.

    Args: path: what was being written; cause: the OSError (its strerror: "No space left on
    device", "Read-only file system", "File too large", ...) or the cause in words.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError | str) -> None:
        why = cause if isinstance(cause, str) else (cause.strerror or str(cause) or type(cause).__name__)
        super().__init__(getattr(cause, "errno", None), f"{os.fspath(path)}: cannot write: {why}")
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised inside the block into a `WriteError` naming `path` (one line)."""
    try:
        yield
    except WriteError:
        raise
    except OSError as err:
        where = err.filename if isinstance(err.filename, str) and err.filename else path
        raise WriteError(where, err) from None


def write_stream(path: str | os.PathLike, save: Callable[[Any], None], *, name: str | os.PathLike | None = None) -> None:
    """Call `save(stream)` with `path` opened for writing; a failed write is a `WriteError` naming
    `name` (default `path`) and the cause, also where the writer would replace the OSError by its
    own message (torch.save: "unexpected pos") or abort the process (torch's writer given a path)."""
    name = path if name is None else name
    with writing(name), open(path, "wb") as raw:
        stream = _ErrorKeepingWriter(raw)
        try:
            save(stream)
        except RuntimeError as err:
            raise WriteError(name, stream.error or f"{type(err).__name__}: {str(err)[:120]}") from None


class _ErrorKeepingWriter(io.RawIOBase):
    """A file's writer that keeps the OSError of a failed write (ENOSPC, EFBIG, EROFS ...)."""

    def __init__(self, raw) -> None:
        super().__init__()
        self.raw, self.error = raw, None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:  # zip writers (torch.export.save) seek back to patch headers
        return self.raw.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def write(self, data) -> int:
        try:
            return self.raw.write(data)
        except OSError as err:
            self.error = err
            raise


def ensure_writable_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and check a file can be created in it, before any long work;
    `WriteError` naming it and the cause otherwise (a read-only file system, a file in the path)."""
    import tempfile

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(folder, "is a file, not a folder")
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:  # the folder, not the probe's random name
        raise WriteError(folder, err) from None
    return folder


class JSONReadError(ValueError):
    """A JSON file is missing (`missing`), cannot be read, or is not valid JSON; `problem` says which, in one line."""

    def __init__(self, path: str | os.PathLike, problem: str, *, missing: bool = False, invalid: bool = False) -> None:
        self.path, self.problem, self.missing, self.invalid = os.fspath(path), problem, missing, invalid
        super().__init__(f"{self.path}: {problem}")


def read_json(path: str | os.PathLike) -> Any:
    """The parsed JSON file at `path`; `JSONReadError` for a missing, unreadable or malformed file."""
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise JSONReadError(path, "file not found", missing=True) from None
    except IsADirectoryError:
        raise JSONReadError(path, "is a folder, not a file", missing=True) from None
    except json.JSONDecodeError as e:
        raise JSONReadError(path, f"{e.msg} at line {e.lineno} column {e.colno}", invalid=True) from None
    except UnicodeDecodeError as e:
        raise JSONReadError(path, f"not UTF-8 text ({e.reason} at byte {e.start})", invalid=True) from None
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise JSONReadError(path, str(e).split(";")[0], invalid=True) from None
    except RecursionError:  # e.g. [[[[...]]]] nested deeper than the parser's recursion limit
        raise JSONReadError(path, "nested too deeply", invalid=True) from None
    except OSError as e:
        raise JSONReadError(path, f"{type(e).__name__}: {e.strerror or e}") from None


def json_type(v: Any) -> str:
    """A JSON value's kind in words ("a string", "null", ...), for one-line errors."""
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, Mapping):
        return "an object"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "null"
    if isinstance(v, Real):
        return "a number"
    return type(v).__name__


def is_int(v: Any) -> bool:
    """A JSON integer (numpy's too), not a boolean: Python counts True as 1."""
    return isinstance(v, Integral) and not isinstance(v, bool)


def is_real(v: Any) -> bool:
    """A JSON number (numpy's too), not a boolean."""
    return isinstance(v, Real) and not isinstance(v, bool)


def is_finite_real(v: Any) -> bool:
    """A JSON number that is finite as a float64 (an integer of 400 digits is not)."""
    try:
        return is_real(v) and math.isfinite(v)
    except OverflowError:
        return False


def _remove_stale_temps(path: Path) -> None:
    """Delete ``.<name>.<pid>.tmp`` files of `path` whose writer process no longer runs."""
    for tmp in path.parent.glob(f".{path.name}.*{_TMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2:-len(_TMP_SUFFIX)]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
