"""The labels a person gives in ``frameqc label``: the journal, ``labels.csv``, their rules.

- Each change is a JSON line of an append-only journal, appended whole (a full disk
  leaves no torn line for the next one to be glued to) and fsynced, then ``labels.csv``
  is replaced atomically: what the page shows as saved is on disk.
- ``labels.csv`` is the operator's file: it is read again at each save, and only the
  rows of this run's frames change; rows frameqc did not write (by hand, or for frames
  of another run on the same ``-o``) stay as they are, where they are.
- A change says which label its page showed on the frame: one made over a label that
  page never saw (another tab, another person) is refused and journalled as refused.
- Paths keep bytes that are not UTF-8 as surrogate escapes, on disk as the name's own
  bytes; where a person reads them, as backslash escapes (:func:`readable`).
"""

from __future__ import annotations

import csv
import fcntl
import functools
import io
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from frameqc.runtime.errors import UsageError
from frameqc.runtime.util.files import append_whole, fsync_path, write_atomic

#: The journal's label for a frame set aside as fitting no label (never written to the CSV).
EXCLUDED = "(excluded)"


class NotSaved(Exception):
    """A change that could not be written (a full disk): nothing of it is kept."""


class Conflict(NotSaved):
    """Changes refused: a frame's label is no longer the one the page saw.

    ``given`` maps each such frame to its label now (None: none), for the page to show.
    """

    def __init__(self, message: str, given: dict[int, str | None]) -> None:
        super().__init__(message)
        self.given = given


def readable(text: str) -> str:
    """A name as a person reads it: bytes that are not UTF-8 as backslash escapes.

    Paths keep such bytes as surrogate escapes (``os.fsdecode``), which no JSON or page
    can carry: ``x\\xff.fits`` is how the page shows the file ``x<0xff>.fits``.
    """
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


class LabelBook:
    """This run's frames' labels (index -> label or EXCLUDED), kept in the journal and CSV.

    Parameters
    ----------
    paths : list of str
        The frames, as the sources named them (the index is each frame's address).
    output : Path
        ``labels.csv``; the journal is ``labels.csv.journal.jsonl`` beside it.
    lock_path : Path
        A file to lock while labels.csv is read and replaced (in the session's cache).
    user : str
        Written in each journal line.
    """

    def __init__(self, paths: list[str], output: Path, lock_path: Path, user: str) -> None:
        self.paths, self.output, self.lock_path, self.user = paths, output, lock_path, user
        self.abspaths = [os.path.abspath(p) for p in paths]
        self.index = {p: i for i, p in enumerate(self.abspaths)}
        self.journal_path = output.with_name(output.name + ".journal.jsonl")
        self.given: dict[int, str] = {}
        self.outside: dict[str, str | None] = {}  # journalled frames of other runs, to restore
        self.saved = 0  # changes saved by this process
        self.lock = threading.Lock()  # the labels
        self.write_lock = threading.Lock()  # one save at a time

    def resume(self) -> None:
        """The labels of labels.csv with the journal replayed over it (see :func:`replay`)."""
        rows = read_rows(self.output)
        shown = None if rows is None else csv_labels(rows, self.output)
        journalled = self.journal_path.exists()
        now = replay(read_journal(self.journal_path) if journalled else (), shown)
        for path, label in {**(shown or {}), **now}.items():
            i = self.index.get(path)
            if i is not None and label is not None:
                self.given[i] = label
        self.outside = {p: label for p, label in now.items()
                        if p not in self.index and in_csv(label) != (shown or {}).get(p)}
        if journalled:
            self._write_csv()  # a kill between the journal and the CSV loses nothing

    def snapshot(self) -> dict[int, str]:
        """The labels now, a copy (the page's state is built from it)."""
        with self.lock:
            return dict(self.given)

    def apply(self, changes: Sequence[tuple[int, str | None]],
              seen: Sequence[str | None] | None, records: dict[int, dict[str, Any]]) -> None:
        """Give frames labels (a label, EXCLUDED, or None to clear), durably, in order.

        ``seen``: the label the page showed on each frame (None: none), checked when given.
        If any frame's label is another by now (a second tab, a second person), nothing is
        applied, the refused changes are journalled as such, and :class:`Conflict` names
        the labels now. Else the journal lines are appended whole and fsynced, then
        ``labels.csv`` is replaced: when this returns, both are on disk. ``records``: the
        model's record of each frame, for the journal.

        Raises
        ------
        NotSaved
            The journal could not be written (nothing changed), or ``labels.csv`` could
            not (the journal has the change; the next save writes it).
        """
        with self.write_lock:
            with self.lock:
                stale = {i: self.given.get(i) for (i, _), was in zip(changes, seen or (),
                                                                      strict=False)
                         if self.given.get(i) != was}
            now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            lines = [self._line(now, i, label, records.get(i, {}), refused=i in stale)
                     for i, label in changes if not stale or i in stale]
            self._append(lines)
            if stale:
                raise Conflict(self._conflict(changes, stale), stale)
            with self.lock:
                for i, label in changes:
                    if label is None:
                        self.given.pop(i, None)
                    else:
                        self.given[i] = label
                self.saved += len(changes)
            try:
                self._write_csv()
            except OSError as exc:
                raise NotSaved(f"the journal has it, but {self.output} could not be "
                               f"rewritten ({exc.strerror or exc}); the next save writes "
                               "it") from None

    def _line(self, now: str, i: int, label: str | None, rec: dict[str, Any],
              refused: bool) -> str:
        line = {"time": now, "user": self.user, "path": self.abspaths[i], "label": label,
                "previous": self.given.get(i), "model_label": rec.get("label"),
                "model_probability": rec.get("probability")}
        if refused:  # another page's label was there: kept, and this one said
            line["refused"] = "conflict"
        return json.dumps(line)

    def _append(self, lines: list[str]) -> None:
        """The journal lines, whole (a failure leaves no torn line) and on disk."""
        try:
            append_whole(self.journal_path, "".join(line + "\n" for line in lines).encode())
            fsync_path(self.journal_path)
        except OSError as exc:
            raise NotSaved(f"cannot write {self.journal_path} ({exc.strerror or exc})"
                           ) from None

    def _conflict(self, changes: Sequence[tuple[int, str | None]],
                  stale: dict[int, str | None]) -> str:
        def said(label: str | None) -> str:
            return "not labelled" if label is None else "excluded" if label == EXCLUDED \
                else f"labelled {label}"

        if len(stale) == 1:
            (i, now), = stale.items()
            mine = dict(changes)[i]
            again = ("undo cannot clear it now" if mine is None else "press x again to "
                     "exclude it anyway" if mine == EXCLUDED else
                     f"press {mine} again to replace it")
            return (f"{readable(os.path.basename(self.paths[i]))} was {said(now)} meanwhile "
                    f"(in another tab or by another person); {again}")
        return (f"{len(stale)} frames of these {len(changes)} were labelled meanwhile (in "
                "another tab or by another person); none of them was saved: they are "
                "shown now")

    def _write_csv(self) -> None:
        """``labels.csv`` as it is on disk now, with this run's frames as they stand.

        Read again at each save under a lock beside it, so rows written meanwhile by a
        person or by another run on the same ``-o`` are kept; each row keeps its place.
        """
        with self.lock:
            given = {self.abspaths[i]: in_csv(v) for i, v in self.given.items()}
        outside = {p: in_csv(v) for p, v in self.outside.items()}
        lock = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                       0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            rows = read_rows(self.output) or []
            base = os.path.dirname(os.path.abspath(self.output))
            out, done = [], set()
            for row in rows:
                key = row_key(row, base)
                if key is None or (key not in self.index and key not in outside):
                    out.append(row)  # not ours: as it is
                elif key not in done:
                    done.add(key)
                    label = given.get(key) if key in self.index else outside[key]
                    if label is not None:
                        out.append([row[0], label, *row[2:]])
            out += sorted([p, label] for p, label in chain(given.items(), outside.items())
                          if label is not None and p not in done)
            write_csv(self.output, out)
        finally:
            os.close(lock)
        self.outside = {}

    def summary(self) -> str:
        """What ``frameqc label`` says when stopped: changes saved, counts, the CSV's rows."""
        with self.lock:
            labelled = sum(1 for v in self.given.values() if v != EXCLUDED)
            excluded = len(self.given) - labelled
        rows = read_rows(self.output)
        held = ("not written" if rows is None else
                f"holds {sum(1 for r in rows if row_key(r, '') is not None)} labels")
        return (f"frameqc label: stopped; {self.saved} change{'s' * (self.saved != 1)} saved "
                f"in this run ({labelled} labelled, {excluded} excluded of "
                f"{len(self.paths)} frames); {self.output} {held}")


def in_csv(label: str | None) -> str | None:
    """What labels.csv shows for a label: nothing for an excluded frame or none."""
    return None if label == EXCLUDED else label


def read_rows(path: Path) -> list[list[str]] | None:
    """The rows of a labels CSV as they are (its header left out); None when it is absent.

    A path's bytes that are not UTF-8 are kept as surrogate escapes, as a path on disk.
    """
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError:
        return None
    except (OSError, csv.Error) as exc:
        raise UsageError(f"{path}: not a readable CSV of path,label ({exc})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    return rows


def row_key(row: list[str], base: str) -> str | None:
    """The frame a row labels, as an absolute path (relative: from ``base``, the CSV's
    folder, as ``evaluate`` reads it); None for a comment, a blank row or no label."""
    if len(row) < 2 or not row[0].strip() or not row[1].strip() or row[0].startswith("#"):
        return None
    return _normal(base, row[0].strip())


@functools.lru_cache(maxsize=1 << 16)
def _normal(base: str, path: str) -> str:
    """A row's path made absolute (kept: each save reads every row again)."""
    return os.path.normpath(os.path.join(base, path))


def csv_labels(rows: list[list[str]], path: Path) -> dict[str, str]:
    """Each labelled frame's label in the rows of the CSV at ``path``."""
    base = os.path.dirname(os.path.abspath(path))
    return {key: row[1].strip() for row in rows if (key := row_key(row, base)) is not None}


def replay(journal: Iterable[dict[str, Any]], shown: dict[str, str] | None
           ) -> dict[str, str | None]:
    """Each journalled frame's label now (None: none), from the journal and the CSV.

    ``labels.csv`` is rewritten after each journal line, so for each frame it shows the
    journal's last label, or (a kill between the two) the one before it: the journal's is
    the label then. Anything else is a person's edit of the CSV since, and it wins.
    Without a CSV (``shown`` None), the journal alone. Refused changes are passed over.
    """
    last: dict[str, tuple[str | None, str | None]] = {}
    for entry in journal:
        path = entry.get("path")
        if isinstance(path, str) and not entry.get("refused"):
            last[os.path.abspath(path)] = (entry.get("label"), entry.get("previous"))
    if shown is None:
        return {p: label for p, (label, _) in last.items()}
    return {p: label if shown.get(p) in (in_csv(label), in_csv(previous)) else shown.get(p)
            for p, (label, previous) in last.items()}


def write_csv(path: Path, rows: list[list[str]]) -> None:
    """A ``path,label`` header and ``rows``, replacing ``path`` atomically and durably."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "label"])
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode("utf-8", "surrogateescape"))


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a journal or cache; a line torn by a kill is passed over."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                yield entry
