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
- **Labels** are kept by a :class:`~frameqc.runtime.web.labels.LabelBook`: an append-only
  journal and ``labels.csv``, both on disk before :meth:`LabellingSession.set_labels` returns,
  the operator's own rows kept, a change over a label its page never saw refused. On
  start the journal is replayed, so a restart resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.util.files import append_whole, write_atomic
from frameqc.runtime.web.labels import EXCLUDED, LabelBook, read_journal, readable

ORDERS = ("uncertain", "alerts", "time", "random")
#: The longest side of the stretched view of a FITS frame, in pixels.
VIEW_SIZE = 768


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


class LabellingSession:
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
        self.output = output
        self.cache_dir = output.with_name(output.name + ".cache")
        self.labels, self.alerts, self.threshold = tuple(labels), tuple(alerts), threshold
        self.model_id, self.precision, self.user = model_id, precision, user
        self.entries: dict[int, Entry] = {}
        self.done = False  # every frame classified
        self.lock = threading.Lock()
        self.version = 0  # bumped on every change the page should fetch
        self._check_output()
        self.book = LabelBook(paths, output, self.cache_dir / "labels.lock", user)
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
        """Labels from labels.csv and the journal; results from the cache."""
        cached = self.cache_dir / "results.jsonl"  # a torn last line: passed over here,
        # cut off by the next append (append_whole)
        self.book.resume()
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
        from frameqc.runtime.output.destinations import Destinations

        destinations = Destinations(None)  # the record only: the cache below keeps it
        todo = [i for i in range(len(self.paths)) if i not in self.entries]
        views: dict[int, Any] = {}
        facts: dict[int, dict[str, str]] = {}
        if progress:
            progress(len(self.entries))
        cache = self.cache_dir / "results.jsonl"
        # run() decides the first frame alone: the page's first frame waits for no batch
        for i, result in zip(todo, classifier.run(self._frames(todo, views, facts),
                                                  batch_size), strict=True):
            rec = destinations.send(result, classifier.card).record
            entry = Entry(rec, facts.pop(i, {}))
            name = self.keys[i]
            if result.prepared is not None:
                entry.net = self._save(f"{name}-net.png", encode(result.prepared.preview(),
                                                                 "PNG"))
            view = views.pop(i, None)
            if view is not None:
                entry.view = self._save(f"{name}-view.jpg", encode(view, "JPEG"))
            append_whole(cache, (json.dumps({"key": name, "record": rec, "facts": entry.facts,
                                             "net": entry.net, "view": entry.view}) + "\n"
                                 ).encode())  # a line whole or not at all (a full disk)
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
        from frameqc.runtime.data.facts import header_keywords
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
                facts[i] = header_keywords(path)
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
        given = self.book.snapshot()
        with self.lock:
            frames = {}
            for i, e in self.entries.items():
                rec = e.record
                error = rec.get("error")
                frames[i] = {"name": readable(self.paths[i]), "facts": e.facts,
                             "error": None if error is None else readable(error),
                             "label": rec.get("label"), "p": rec.get("probability"),
                             "probs": rec.get("probabilities"), "doubtful": rec.get("doubtful"),
                             "given": given.get(i), "view": e.view is not None}
            counts = {"total": len(self.paths), "classified": len(self.entries),
                      "errors": sum(1 for e in self.entries.values() if "error" in e.record),
                      "labelled": sum(1 for v in given.values() if v != EXCLUDED),
                      "excluded": sum(1 for v in given.values() if v == EXCLUDED)}
            return {"version": self.version, "done": self.done, "order": order,
                    "frames": frames, "counts": counts, "labels": self.labels,
                    "alerts": self.alerts, "user": self.user}

    # -- labels -----------------------------------------------------------------------

    def set_labels(self, changes: Sequence[tuple[int, str | None]],
                   seen: Sequence[str | None] | None = None) -> dict[str, Any]:
        """Give frames labels (a label, EXCLUDED, or None to clear): see
        :meth:`~frameqc.runtime.web.labels.LabelBook.apply` (``seen``, and what it raises).

        Raises
        ------
        UsageError
            An unknown frame or label, a frame named twice, or a seen list that does not
            match the changes.
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
        records = {i: self.entries[i].record for i, _ in changes if i in self.entries}
        try:
            self.book.apply(changes, seen, records)
        finally:  # refused or not, the pages look again
            with self.lock:
                self.version += 1
        return {"saved": len(changes), "version": self.version}

    def summary(self) -> str:
        """What a stop says: the changes saved, the counts, what labels.csv holds."""
        return self.book.summary()
