"""Which frames a command was given: the one grammar of SOURCES for every command.

A source is

- a frame file, taken as named (its kind is judged by its bytes when read);
- a folder: its frames, searched recursively, each folder's names sorted; hidden files
  and folders (names starting with ``.``) are passed over, and so are files whose names
  do not end in a frame suffix (:data:`FRAME_SUFFIXES`);
- ``-``: paths read from standard input, one per line;
- ``@LIST``: paths read from the file LIST, one per line.

In lists, blank lines and lines starting with ``#`` are skipped; bytes that are not
UTF-8 are kept as they are (the frame is then read, or refused, by its real name).
Everything streams: a folder of a million frames is walked as its paths are consumed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from frameqc.runtime.errors import UsageError

if TYPE_CHECKING:
    from pathlib import Path

#: Names a folder walk picks up; single files are judged by their bytes.
FRAME_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz",
                  ".fz", ".fits.bz2", ".fit.bz2", ".fts.bz2", ".jpg", ".jpeg", ".png")

Warn = Callable[[str], None]


def _to_stderr(text: str) -> None:
    print(f"frameqc: {text}", file=sys.stderr)


def is_frame_name(name: str) -> bool:
    return name.lower().endswith(FRAME_SUFFIXES) and not name.startswith(".")


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """The frames directly in ``folder`` (not in sub-folders), sorted: what ``watch`` sees."""
    from pathlib import Path

    return sorted(p for p in Path(folder).iterdir() if is_frame_name(p.name) and p.is_file())


def walk_frames(root: str | os.PathLike, followlinks: bool = False,
                warn: Warn = _to_stderr) -> Iterator[str]:
    """The frames under ``root``, recursively, named from ``root`` as given, sorted.

    A sub-folder that cannot be read is named through ``warn`` and passed over; so is
    a symbolic link to a folder, unless ``followlinks``.
    """
    def unreadable(exc: OSError) -> None:
        warn(f"{exc.filename}: cannot read this folder ({exc.strerror or exc}); skipped")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable,
                                                followlinks=followlinks):
        if not followlinks:
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for d in links:
                warn(f"{os.path.join(dirpath, d)}: a link to a folder; not followed")
        else:
            links = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in links)
        for name in sorted(filenames):
            if is_frame_name(name):
                yield os.path.join(dirpath, name)


def read_list(lines: Iterable[str]) -> Iterator[str]:
    """Paths from a list: one per line, blank lines and ``#`` comments skipped."""
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def expand(sources: Iterable[str], stdin: TextIO | None = None, warn: Warn = _to_stderr
           ) -> Iterator[str]:
    """Every frame path that ``sources`` name, in order, as a stream (module docstring)."""
    for src in sources:
        if src == "-":
            stream = stdin if stdin is not None else sys.stdin
            if hasattr(stream, "reconfigure"):
                stream.reconfigure(errors="surrogateescape")
            yield from read_list(stream)
        elif src.startswith("@") and len(src) > 1:
            try:
                with open(src[1:], encoding="utf-8", errors="surrogateescape") as fh:
                    yield from read_list(fh)
            except OSError as exc:
                raise UsageError(f"{src}: cannot read the list ({exc.strerror or exc})") from None
        elif os.path.isdir(src):
            if not os.access(src, os.R_OK | os.X_OK):
                warn(f"{src}: cannot read this folder (Permission denied); skipped")
                continue
            yield from walk_frames(src, warn=warn)
        else:
            yield src
