"""Writing outputs safely: inside the output folder, whole or not at all, and failing in one line.

Every writer of the package (bench results and score records, generation work files and the published
dataset, training checkpoints and exports, packed shards and exports) goes through these helpers, so:

- a target that leaves its output root through a symlink (the file itself or a folder on the way) is
  refused before anything is written (resolve-and-compare, and ``O_NOFOLLOW`` where a file is opened);
- a file appears under its final name only once it is complete: it is written to a temporary sibling,
  flushed to disk, then renamed over the target, so a full disk or a kill leaves no truncated file that
  a resume would trust;
- an ``OSError`` (a full disk, a read-only or missing folder, a permission) becomes one
  :class:`SparkleWriteError` line naming the path and the errno's meaning, e.g.
  ``out/a.mp4: No space left on device (ENOSPC)``.

This module sits at the bottom of the package, beside ``errors.py``: it imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SparkleWriteError(OSError):
    """An output that could not be written, or that would have been written outside its output folder.

    Subclasses ``OSError`` (with ``errno`` and ``filename`` set where the system gave them) so callers
    that already handle OS errors keep working; ``str()`` is always the one line the CLI prints.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, code: int | None = None):
        super().__init__(code, message, None if path is None else os.fspath(path))
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes, message intact
        return (_rebuild, (self.message, self.filename, self.errno))


def _rebuild(message: str, path: str | None, code: int | None) -> SparkleWriteError:
    return SparkleWriteError(message, path=path, code=code)


def _line(where: str | os.PathLike | None, e: OSError) -> str:
    code = e.errno if isinstance(e.errno, int) else None
    name = errno_codes.errorcode.get(code, str(code)) if code else type(e).__name__
    meaning = os.strerror(code) if code else (e.strerror or str(e) or type(e).__name__)
    line = f"{os.fspath(where) if where is not None else '(no path)'}: {meaning} ({name})"
    return " ".join(line.split())  # one line, whatever the library put in its message


def os_error_line(e: OSError, path: str | os.PathLike | None = None) -> str:
    """``PATH: meaning (ENAME)``: the line an OS error ends a command with (``path`` where ``e`` names none)."""
    if isinstance(e, SparkleWriteError):
        return e.message
    return _line(e.filename if e.filename is not None else path, e)


def write_error(e: OSError, path: str | os.PathLike | None = None) -> SparkleWriteError:
    """``e`` as a :class:`SparkleWriteError` naming ``path`` (the file the caller was writing: the final
    name rather than a temporary one), or the file the system named; unchanged if it is one already."""
    if isinstance(e, SparkleWriteError):
        return e
    where = path if path is not None else e.filename
    return SparkleWriteError(_line(where, e), path=where, code=e.errno if isinstance(e.errno, int) else None)


@contextlib.contextmanager
def os_errors(path: str | os.PathLike | None) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`SparkleWriteError` naming ``path``
    (the file the system named where ``path`` is ``None``); PyAV's and fsspec's are ``OSError`` too."""
    try:
        yield
    except SparkleWriteError:
        raise
    except OSError as e:
        raise write_error(e, path) from e


def inside(root: str | os.PathLike, target: str | os.PathLike) -> Path:
    """``target`` unchanged if it resolves under ``root``; a :class:`SparkleWriteError` if a symlink (the
    target itself or a folder on the way) leads out of ``root``. ``target`` need not exist yet."""
    base = Path(root).resolve()
    path = Path(target)
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise SparkleWriteError(
            f"refusing to write {path}: it leads outside {root} (to {resolved})",
            path=path,
            code=errno_codes.EXDEV,
        )
    return path


def checked(target: str | os.PathLike, root: str | os.PathLike | None) -> Path:
    """``target`` checked against ``root`` (no check when ``root`` is ``None``)."""
    return Path(target) if root is None else inside(root, target)


def temp_sibling(path: str | os.PathLike) -> Path:
    """A hidden temporary name beside ``path``, unique per process and thread (``.NAME.PID-TID.tmp``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file(fd: int, tmp: Path) -> IO[bytes]:
    """The file object over the descriptor of the temporary file ``tmp`` (one place, so that tests can
    fill the disk under any writer)."""
    return os.fdopen(fd, "wb")


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, root: str | os.PathLike | None = None, *, fsync: bool = True
) -> Iterator[IO[bytes]]:
    """A binary file that appears at ``path`` only when the block ends without an error.

    The data goes to :func:`temp_sibling` (created exclusively, never through a link), is flushed and
    ``fsync``-ed, then renamed over ``path``; on any error the temporary file is removed and whatever was
    at ``path`` before is kept. OS errors are raised as :class:`SparkleWriteError`.
    """
    final = checked(path, root)
    tmp = temp_sibling(final)
    with os_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        if root is not None:
            inside(root, final)  # the folders made just now cannot have become links, but a race could
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    try:
        with _file(fd, tmp) as f, os_errors(final):
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        with os_errors(final):
            os.replace(tmp, final)
        if fsync:
            fsync_dir(final.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_bytes(
    path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None, *, fsync: bool = True
) -> Path:
    """Write ``data`` to ``path`` whole or not at all (see :func:`atomic_open`); returns the path."""
    with atomic_open(path, root, fsync=fsync) as f:
        f.write(data)
    return Path(path)


def write_text(
    path: str | os.PathLike, text: str, root: str | os.PathLike | None = None, *, fsync: bool = True
) -> Path:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    return write_bytes(path, text.encode("utf-8"), root, fsync=fsync)


def write_json(
    path: str | os.PathLike, value: Any, root: str | os.PathLike | None = None, **dumps: Any
) -> Path:
    """:func:`write_text` of ``json.dumps(value, **dumps)`` and a final newline."""
    return write_text(path, json.dumps(value, **dumps) + "\n", root)


def replace(src: str | os.PathLike, dst: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Move a finished file into place (``os.replace``) after checking ``dst`` against ``root``."""
    target = checked(dst, root)
    with os_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if root is not None:
            inside(root, target)
        os.replace(src, target)
    return target


@contextlib.contextmanager
def open_append(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Iterator[IO[bytes]]:
    """``path`` opened for appending (``ab+``), refusing a final symlink (``O_NOFOLLOW``) and a target
    outside ``root``; OS errors are raised as :class:`SparkleWriteError`."""
    target = checked(path, root)
    with os_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if target.is_symlink():
                raise OSError(errno_codes.ELOOP, "symbolic link", os.fspath(target))
            fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno_codes.ELOOP:  # O_NOFOLLOW's answer to a link (a race with the check)
                raise SparkleWriteError(
                    f"refusing to write {target}: it is a symbolic link", path=target, code=e.errno
                ) from e
            raise
        f = os.fdopen(fd, "ab+")
    with f, os_errors(target):
        yield f
