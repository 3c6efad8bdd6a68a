"""Writing files so that other processes and a crash see them whole.

Only ``os`` and ``fcntl``: the light path of a one-shot (its ``--log``) uses it.
"""

from __future__ import annotations

import fcntl
import os


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` in one write under an exclusive lock: concurrent writers' lines
    never interleave (``--log`` lines, the InfluxDB spool)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
    finally:
        os.close(fd)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file, or a folder's entries, to disk by name (before and after a rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
