"""Writing files so that other processes, a full disk and a crash see them whole.

Two ways of writing, and every file frameqc keeps goes through one of them:
:func:`append_whole` for files that grow by lines (``--log``, the InfluxDB spool, the
labelling journal and results cache), :func:`atomic_file` / :func:`write_atomic` for
files replaced whole (pages, images, thumbnail entries, CSVs).

Only ``os``, ``fcntl`` and ``contextlib``: the light path of a one-shot (its ``--log``)
uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import BinaryIO

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` (whole lines) under an exclusive lock, all of it or none of it.

    Concurrent writers' lines never interleave. A short write is a failed write: the
    loop writes until all is written, and on any error the file is cut back to where it
    ended, so it always ends on a whole line and the caller can keep its work to redo.
    A tail left torn by a writer that died mid-line is cut off before appending, so a new
    line is never glued onto it.
    """
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        end = heal(fd)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, end)
            raise
    finally:
        os.close(fd)


def heal(fd: int) -> int:
    """Cut a torn last line (no final newline) off the open file ``fd``; return its size."""
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return end
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            pos = start + cut + 1
            break
        pos = start
    os.ftruncate(fd, pos)
    return pos


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write ``path`` whole or not at all: yields a binary file to write it through.

    The data goes to a new temporary name in the same folder, created with ``O_EXCL``
    (a file or a symlink planted at a guessable name is never followed or reused), is
    flushed to disk, renamed over ``path``, and the folder's entry flushed too. On any
    error the temporary file is removed and ``path`` keeps what it had.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | _NOFOLLOW
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(tmp, flags, mode)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path}: no free temporary name beside it")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        fsync_path(folder or ".")


def write_atomic(path: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` (text is written as UTF-8) through :func:`atomic_file`."""
    with atomic_file(path, mode) as fh:
        fh.write(data.encode() if isinstance(data, str) else data)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries, to disk by name (before and after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
