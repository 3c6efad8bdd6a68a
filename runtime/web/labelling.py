"""The labelling session behind ``frameqc label``: frames, the model's view of them, labels.

Everything here is plain Python (no web framework), so the rules can be read and tested
apart from the pages:

- **Frames** are the sources expanded once, addressed by their index in that list and
  nothing else: a request can only name a frame it was given.
- **Classification** runs in a background thread through the runtime's own
  :class:`~frameqc.runtime.engine.pipeline.Classifier`, batched. Each frame's record, its
  header facts and two pictures (the network's input, rendered by the recipe's own
  :meth:`~frameqc.runtime.model.recipes.Prepared.preview`, and a larger stretched view)
  go to a cache beside the output, keyed by the file's path, size and mtime and the
  model's id: a restart on the same ``-o`` is instant.
- **Labels** go to an append-only journal (JSON lines) and to ``labels.csv``, both flushed
  and fsynced before :meth:`Session.set_labels` returns: what the page shows as saved is
  on disk. ``labels.csv`` is the operator's file: rows frameqc did not write (by hand, or
  for frames of another run on the same ``-o``) are kept as they are; only the rows of
  this run's frames are frameqc's to change. On start the journal is replayed over it, so
  a restart resumes where it stopped.
- **Two pages** (two tabs, two people) on one session: each change says which label the
  page saw on the frame, and one made over a label the page never saw is refused (and
  journalled as refused), never applied silently.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import io
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.util.files import append_whole, fsync_path, write_atomic

#: The journal's label for a frame set aside as fitting no label (never written to the CSV).
EXCLUDED = "(excluded)"
ORDERS = ("uncertain", "alerts", "time", "random")
#: The longest side of the stretched view of a FITS frame, in pixels.
VIEW_SIZE = 768
FACTS = ("DATE-OBS", "OBJECT", "EXPTIME", "FILTER", "FILTER1", "FILTER2", "FILTER3")


class NotSaved(Exception):
    """A change that could not be written (a full disk): nothing of it is kept."""


class Conflict(NotSaved):
    """Changes refused: a frame's label is no longer the one the page saw.

    ``given`` maps each such frame to its label now (None: none), for the page to show.
    """

    def __init__(self, message: str, given: dict[int, str | None]) -> None:
        super().__init__(message)
        self.given = given


@dataclass
class Entry:
    """One classified frame: its record, header facts and cached pictures."""

    record: dict[str, Any]
    facts: dict[str, str] = field(default_factory=dict)
    net: str | None = None  # file names in the cache folder
    view: str | None = None


def cache_key(path: str, model_id: str, precision: str) -> str:
    """What makes a cached result stale: the file (path, size, mtime) and the model."""
    try:
        st = os.stat(path)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    key = f"{os.path.abspath(path)}\0{stamp}\0{model_id}\0{precision}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()


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


def header_facts(path: str) -> dict[str, str]:
    """DATE-OBS, OBJECT, EXPTIME and FILTER* from a FITS file's headers (image HDU first).

    Read with the reader's own header walk (no astropy: its card parsing would hold the
    interpreter while the page waits); anything unreadable gives an empty dict.
    """
    import gzip

    from frameqc.runtime.data.fitswalk import check_fits_sizes
    from frameqc.runtime.data.reader import max_pixels, open_regular

    try:
        with open_regular(path) as fh:
            stream = gzip.GzipFile(fileobj=fh) if fh.read(2) == b"\x1f\x8b" else fh
            fh.seek(0)
            found = check_fits_sizes(stream, max_pixels())
    except (FrameError, OSError, EOFError, ValueError):
        return {}
    facts: dict[str, str] = {}
    for cards in (found.cards, found.primary) if found else ():
        for key in FACTS:
            value = cards.get(key, "").strip().strip("'").strip()
            if value and key not in facts:
                facts[key] = value
    return facts


def stretched_view(frame: Any) -> Any:
    """A frame as a person looks at it: median-binned to :data:`VIEW_SIZE` and asinh-stretched.

    The same stretch as the shutter recipe (so a band looks as the network's view shows
    it), on the whole frame rather than the centre crop; an RGB image is shown as it is.
    """
    import numpy as np

    from frameqc.runtime.data.binning import median_bin
    from frameqc.runtime.data.reader import FITS
    from frameqc.runtime.model.recipes import asinh_stretch, to_uint16

    if frame.kind != FITS:
        return frame.data
    factor = max(1, -(-max(frame.data.shape) // VIEW_SIZE))
    binned = median_bin(frame.data, factor)
    if binned.dtype.kind == "f" and not np.isfinite(binned).all():
        finite = np.isfinite(binned)
        binned = np.where(finite, binned, np.median(binned[finite]) if finite.any() else 0)
    return asinh_stretch(to_uint16(binned))


def encode(image: Any, fmt: str) -> bytes:
    """A uint8 image as PNG or JPEG bytes (Pillow)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return out.getvalue()


def distance(rec: dict[str, Any], labels: Sequence[str], alerts: Sequence[str],
             threshold: float) -> float:
    """How far the probabilities are from changing the decision (0: on the edge).

    Half the gap between the two most probable labels, or an alert label's distance to
    the threshold, whichever is smaller: :func:`~frameqc.runtime.model.decision.doubtful`
    is the same rule with a margin.
    """
    probs = rec["probabilities"]
    top = sorted(probs.values(), reverse=True)
    d = (top[0] - top[1]) / 2 if len(top) > 1 else 1.0
    for a in alerts:
        d = min(d, abs(probs[a] - threshold))
    return d


class Session:
    """Frames, their classification, and the labels a person gives them.

    Parameters
    ----------
    paths : list of str
        The frames, as the sources named them; a frame's index here is its only address.
    output : Path
        ``labels.csv``; the journal and the cache live beside it.
    labels, alerts, threshold, model_id, precision
        From the model card (the classifier's rule).
    user : str
        Written in each journal line.
    """

    def __init__(self, paths: list[str], output: Path, labels: Sequence[str],
                 alerts: Sequence[str], threshold: float, model_id: str, precision: str,
                 user: str) -> None:
        self.paths = paths
        self.abspaths = [os.path.abspath(p) for p in paths]
        self.index = {p: i for i, p in enumerate(self.abspaths)}
        self.output = output
        self.journal_path = output.with_name(output.name + ".journal.jsonl")
        self.cache_dir = output.with_name(output.name + ".cache")
        self.labels, self.alerts, self.threshold = tuple(labels), tuple(alerts), threshold
        self.model_id, self.precision, self.user = model_id, precision, user
        self.entries: dict[int, Entry] = {}
        self.given: dict[int, str] = {}  # index -> label or EXCLUDED
        self.outside: dict[str, str | None] = {}  # journalled frames of other runs, to restore
        self.saved = 0  # changes saved by this process
        self.done = False  # every frame classified
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.version = 0  # bumped on every change the page should fetch
        self._check_output()
        self.keys = [cache_key(p, model_id, precision) for p in paths]
        self._resume()

    # -- start: output, journal, cache ------------------------------------------------

    def _check_output(self) -> None:
        folder = self.output.parent
        if self.output.is_dir():
            raise UsageError(f"-o {self.output}: is a folder; give a file such as labels.csv")
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UsageError(f"-o {self.output}: cannot write in {folder}")
        try:
            self.cache_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the cache {self.cache_dir} ({exc.strerror})"
                             ) from None

    def _resume(self) -> None:
        """Labels from labels.csv with the journal replayed over it; results from the cache."""
        index = self.index
        cached = self.cache_dir / "results.jsonl"
        _heal(cached)
        rows = read_rows(self.output)
        shown = None if rows is None else csv_labels(rows, self.output)
        journalled = self.journal_path.exists()
        now = replay(read_journal(self.journal_path) if journalled else (), shown)
        for path, label in {**(shown or {}), **now}.items():
            i = index.get(path)
            if i is not None and label is not None:
                self.given[i] = label
        self.outside = {p: label for p, label in now.items()
                        if p not in index and in_csv(label) != (shown or {}).get(p)}
        if journalled:
            self._write_csv()  # a kill between the journal and the CSV loses nothing
        if cached.exists():
            wanted = {k: i for i, k in enumerate(self.keys)}
            for entry in read_journal(cached):
                i = wanted.get(entry.get("key"))
                if i is not None:
                    self.entries[i] = Entry(entry["record"], entry.get("facts", {}),
                                            entry.get("net"), entry.get("view"))
        self.done = len(self.entries) == len(self.paths)

    # -- classification ---------------------------------------------------------------

    def classify(self, classifier: Any, progress: Callable[[int], None] | None = None,
                 batch_size: int = 8) -> None:
        """Classify every frame not in the cache, adding each to the session as it comes."""
        from frameqc.runtime.output.record import record

        todo = [i for i in range(len(self.paths)) if i not in self.entries]
        views: dict[int, Any] = {}
        facts: dict[int, dict[str, str]] = {}
        if progress:
            progress(len(self.entries))
        first = todo[:1]  # alone: the page's first frame waits for no batch
        with open(self.cache_dir / "results.jsonl", "a") as cache:
            for i, result in zip(todo, chain(
                    classifier.run(self._frames(first, views, facts), 1),
                    classifier.run(self._frames(todo[1:], views, facts), batch_size)),
                    strict=True):
                rec = record(result, classifier.model.card)
                entry = Entry(rec, facts.pop(i, {}))
                name = self.keys[i]
                if result.prepared is not None:
                    entry.net = self._save(f"{name}-net.png", encode(result.prepared.preview(),
                                                                     "PNG"))
                view = views.pop(i, None)
                if view is not None:
                    entry.view = self._save(f"{name}-view.jpg", encode(view, "JPEG"))
                cache.write(json.dumps({"key": name, "record": rec, "facts": entry.facts,
                                        "net": entry.net, "view": entry.view}) + "\n")
                cache.flush()
                with self.lock:
                    self.entries[i] = entry
                    self.version += 1
                if progress:
                    progress(len(self.entries))
        with self.lock:
            self.done = True
            self.version += 1

    def _frames(self, todo: list[int], views: dict, facts: dict) -> Iterator[tuple[str, Any]]:
        """Each frame read once: to the classifier, and to the stretched view and facts."""
        from frameqc.runtime.data.reader import FITS, read_frame

        for i in todo:
            path = self.paths[i]
            try:
                frame = read_frame(path)
            except FrameError:
                yield path, path  # the classifier reads it again and says why it cannot
                continue
            with contextlib.suppress(FrameError, ValueError):  # a flat frame: no stretch
                views[i] = stretched_view(frame)
            if frame.kind == FITS:
                facts[i] = header_facts(path)
            yield path, frame

    def _save(self, name: str, data: bytes) -> str:
        write_atomic(self.cache_dir / name, data)
        return name

    def picture(self, index: int, kind: str) -> Path | None:
        """The cached network view (``net``) or stretched view (``view``) of a frame."""
        entry = self.entries.get(index)
        name = None if entry is None else entry.net if kind == "net" else entry.view
        return None if name is None else self.cache_dir / name

    # -- what the page shows ----------------------------------------------------------

    def order(self, how: str) -> list[int]:
        """The classified frames in the order asked for; unreadable frames last."""
        with self.lock:
            items = list(self.entries.items())
        ok = [(i, e.record) for i, e in items if "error" not in e.record]
        bad = sorted(i for i, e in items if "error" in e.record)
        if how == "uncertain":
            ok.sort(key=lambda it: (not it[1]["doubtful"], distance(
                it[1], self.labels, self.alerts, self.threshold), it[0]))
        elif how == "alerts":
            ok.sort(key=lambda it: (it[1]["label"] not in self.alerts,
                                    -sum(it[1]["probabilities"][a] for a in self.alerts),
                                    it[0]))
        elif how == "time":
            ok.sort(key=lambda it: (it[1].get("date_obs") or "~", self.paths[it[0]]))
        elif how == "random":
            rng = random.Random(str(self.output))
            shuffled = list(range(len(self.paths)))
            rng.shuffle(shuffled)
            rank = {i: n for n, i in enumerate(shuffled)}
            ok.sort(key=lambda it: rank[it[0]])
        else:
            raise UsageError(f"unknown order {how!r}; known: {', '.join(ORDERS)}")
        return [i for i, _ in ok] + bad

    def state(self, how: str, since: int | None = None) -> dict[str, Any]:
        """Everything the page needs but pictures: frames, order, labels, counts.

        With ``since`` (the version the page holds) and nothing changed since, only the
        version: a page keeps asking, to see what other pages change, at no cost.
        """
        if since == self.version:
            return {"version": since, "unchanged": True}
        order = self.order(how)
        with self.lock:
            frames = {}
            for i, e in self.entries.items():
                rec = e.record
                error = rec.get("error")
                frames[i] = {"name": readable(self.paths[i]), "facts": e.facts,
                             "error": None if error is None else readable(error),
                             "label": rec.get("label"), "p": rec.get("probability"),
                             "probs": rec.get("probabilities"), "doubtful": rec.get("doubtful"),
                             "given": self.given.get(i), "view": e.view is not None}
            counts = {"total": len(self.paths), "classified": len(self.entries),
                      "errors": sum(1 for e in self.entries.values() if "error" in e.record),
                      "labelled": sum(1 for v in self.given.values() if v != EXCLUDED),
                      "excluded": sum(1 for v in self.given.values() if v == EXCLUDED)}
            return {"version": self.version, "done": self.done, "order": order,
                    "frames": frames, "counts": counts, "labels": self.labels,
                    "alerts": self.alerts, "user": self.user}

    # -- labels -----------------------------------------------------------------------

    def set_labels(self, changes: Sequence[tuple[int, str | None]],
                   seen: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Give frames labels (a label, EXCLUDED, or None to clear), durably, in order.

        ``seen``: the label the page showed on each frame (None: none), checked when given.
        If any frame's label is another by now (a second tab, a second person), nothing is
        applied, the refused changes are journalled as such, and :class:`Conflict` names
        the labels now. Else the journal lines are appended whole and fsynced, then
        ``labels.csv`` is replaced: when this returns, both are on disk.

        Raises
        ------
        UsageError
            An unknown frame or label, a frame named twice, or a seen list that does not
            match the changes.
        NotSaved
            The journal could not be written (nothing changed), or ``labels.csv`` could
            not (the journal has the change; the next save or start writes it).
        """
        for i, label in changes:
            if not isinstance(i, int) or not 0 <= i < len(self.paths):
                raise UsageError(f"no frame {i!r}")
            if label is not None and label != EXCLUDED and label not in self.labels:
                raise UsageError(f"unknown label {label!r}")
            entry = self.entries.get(i)
            if label not in (None, EXCLUDED) and (entry is None or "error" in entry.record):
                raise UsageError(f"frame {i} has no decision to correct: exclude it instead")
        if len({i for i, _ in changes}) != len(changes):
            raise UsageError("a frame is named twice in one change")
        if seen is not None and len(seen) != len(changes):
            raise UsageError("one seen label is needed for each change")
        with self.write_lock:
            with self.lock:
                stale = {i: self.given.get(i) for (i, _), was in zip(changes, seen or (),
                                                                      strict=False)
                         if self.given.get(i) != was}
            now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            lines = [self._line(now, i, label, refused=i in stale)
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
                self.version += 1
                self.saved += len(changes)
            try:
                self._write_csv()
            except OSError as exc:
                raise NotSaved(f"the journal has it, but {self.output} could not be "
                               f"rewritten ({exc.strerror or exc}); the next save writes "
                               "it") from None
        return {"saved": len(changes), "version": self.version}

    def _line(self, now: str, i: int, label: str | None, refused: bool) -> str:
        rec = self.entries[i].record if i in self.entries else {}
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
        lock = os.open(self.cache_dir / "labels.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
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
        """What a stop says: the changes saved, the counts, what labels.csv holds."""
        with self.lock:
            labelled = sum(1 for v in self.given.values() if v != EXCLUDED)
            excluded = len(self.given) - labelled
        rows = read_rows(self.output)
        held = ("not written" if rows is None else
                f"holds {sum(1 for r in rows if row_key(r, '') is not None)} labels")
        return (f"frameqc label: stopped; {self.saved} change{'s' * (self.saved != 1)} saved "
                f"in this run ({labelled} labelled, {excluded} excluded of "
                f"{len(self.paths)} frames); {self.output} {held}")


def _heal(path: Path) -> None:
    """End a file torn by a kill with a newline, so the next line appended stands alone."""
    try:
        with open(path, "rb+") as fh:
            if fh.seek(0, os.SEEK_END) and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        pass


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
