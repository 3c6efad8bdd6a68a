"""The InfluxDB sender: never blocks classification, loses no point it was given.

Each point is appended to a spool file before its frame counts as done, so a process
killed a moment later (SIGKILL, the OOM killer) loses none. A background thread posts the
spool's oldest points in batches and marks each line delivered once InfluxDB has it; a
spool whose every line is delivered is emptied. A run that ends mid-way (a cron one-shot
with a slow InfluxDB, a kill) therefore leaves only what was not delivered, and the next
process using the same spool goes on from there: nothing is sent twice but the batch that
was in flight. While InfluxDB does not answer, points wait and are tried again after 1, 2,
4 ... 60 s. Lines InfluxDB refuses are dropped, counted and said (a partial write names
them: only those go). What could not be kept is counted and reported in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from frameqc.runtime.output.line_protocol import line
from frameqc.runtime.senders.influx_api import TIMEOUT, Down, Refused, post, write_url
from frameqc.runtime.util.files import append_whole
from frameqc.runtime.util.text import first_line, readable

BATCH = 500  # points per request
FLUSH_EVERY = 1.0  # seconds a point may wait for its batch
BACKOFF = (1.0, 60.0)  # first and longest wait between two tries while InfluxDB is down
DONE = b"#"  # a delivered line's first byte: a comment, should an older frameqc resend it
CHUNK = 1 << 18  # bytes read from the spool at a time


# -- the spool -----------------------------------------------------------------------------

class Spool:
    """A file of points, oldest first, shared safely by the processes that use it.

    Lines are appended whole (:func:`append_whole`). A delivered line is marked in place,
    its first byte overwritten by :data:`DONE`, so the file keeps its length (a kill at
    any moment leaves whole lines) until every line is delivered and it is emptied. Each
    change is made under the file's lock, held for file work only, never for a request.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._start = 0  # where the first line this process saw undelivered begins

    def append(self, data: bytes) -> None:
        try:
            append_whole(self.path, data)
        except FileNotFoundError:  # its folder is not there (yet): make it, once more
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_whole(self.path, data)

    def pending(self) -> int:
        """Points not delivered yet."""
        try:
            with open(self.path, "rb") as fh:
                return sum(1 for ln in fh if ln.strip() and not ln.startswith(DONE))
        except OSError:
            return 0

    def take(self, n: int) -> list[tuple[int, bytes]]:
        """Up to ``n`` of the oldest undelivered lines (without newline), with their offsets."""
        with self._locked() as fd:
            if fd is None:
                return []
            size = os.fstat(fd).st_size
            if self._start > size or (self._start and os.pread(fd, 1, 0) != DONE):
                self._start = 0  # emptied, perhaps refilled, by another process
            taken: list[tuple[int, bytes]] = []
            for offset, ln in _lines(fd, self._start, size):
                if ln.strip() and not ln.startswith(DONE):
                    taken.append((offset, ln))
                    if len(taken) == n:
                        break
            self._start = taken[0][0] if taken else size
            return taken

    def mark(self, lines: list[tuple[int, bytes]]) -> None:
        """Mark ``lines`` (from :meth:`take`) delivered, unless another process has already;
        empty the spool once all of it is delivered."""
        with self._locked() as fd:
            if fd is None or not lines:
                return
            for offset, ln in lines:
                if os.pread(fd, len(ln), offset) == ln:
                    os.pwrite(fd, DONE, offset)
            size = os.fstat(fd).st_size
            if lines[-1][0] + len(lines[-1][1]) + 1 >= size and not any(
                    ln.strip() and not ln.startswith(DONE) for _, ln in _lines(fd, 0, size)):
                os.ftruncate(fd, 0)
                self._start = 0

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int | None]:
        """The spool's descriptor under its exclusive lock (None when there is no spool)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


def _lines(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """The whole lines of ``fd`` between ``start`` and ``end``, with their offsets (a torn
    tail, left by a writer that died mid-line, is not a line)."""
    pos, rest = start, b""
    while pos < end:
        chunk = os.pread(fd, min(CHUNK, end - pos), pos)
        if not chunk:
            return
        data, at = rest + chunk, pos - len(rest)
        pos += len(chunk)
        lines = data.split(b"\n")
        rest = lines.pop()
        for ln in lines:
            yield at, ln
            at += len(ln) + 1


# -- the sender ----------------------------------------------------------------------------

class InfluxSender:
    """A destination of :class:`~frameqc.runtime.output.destinations.Destinations`: each
    record as a point.

    Parameters
    ----------
    url : str
        ``--influx URL`` (see :func:`write_url`).
    spool : path
        Where points wait until InfluxDB has them (:func:`frameqc.runtime.senders.spool_beside`).
    tags : dict, optional
        The operator's tags, on every point.
    """

    def __init__(self, url: str, spool: str | os.PathLike, tags: dict[str, str] | None = None,
                 err: TextIO | None = None, batch: int = BATCH,
                 flush_every: float = FLUSH_EVERY, timeout: float = TIMEOUT) -> None:
        self.url, self.headers = write_url(url)
        self.shown = url.split("?")[0]
        self.tags = dict(tags or {})
        self.spool = Spool(Path(spool))
        self.err = err or sys.stderr
        self.batch, self.flush_every, self.timeout = batch, flush_every, timeout
        self.sent = self.resent = self.failed = self.lost = 0
        self.refusal = ""  # what InfluxDB said when it last refused points
        self.waiting = self.spool.pending()  # points that waited: an earlier run's, an outage's
        self.down: str | None = None  # why InfluxDB is not taking points, while it is not
        self.outages = self.back = 0  # outages so far; points that waited, sent since
        self.retry_at = 0.0
        self.backoff = BACKOFF[0]
        self._said: set[str] = set()
        self._counts = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="frameqc-influx", daemon=True)
        self._thread.start()

    def __call__(self, rec: dict, timings: dict[str, float]) -> bool:
        """Put the record's point in the spool; False when it could not be written there
        (the frame is then not done: ``watch`` takes it again)."""
        try:
            data = (line(rec, self.tags) + "\n").encode()
        except Exception as exc:  # a value no encoding takes: a bug, said; the frame goes on
            self._count(lost=1)
            self._say("encode", f"cannot encode the point of {readable(str(rec.get('path')))} "
                                f"({first_line(exc)}); such points are lost and counted")
            return True
        try:
            self.spool.append(data)
        except OSError as exc:
            self._count(lost=1)
            self._say("spool", f"cannot write the spool {self.spool.path} "
                               f"({exc.strerror or exc}); points are being lost and counted")
            return False
        if self.down is not None:
            self._count(waiting=1)
        return True

    def health(self) -> dict:
        """What ``status`` shows: sent (and how many had waited), pending, refused, lost."""
        return {"sink": "influx", "url": self.shown, "sent": self.sent, "resent": self.resent,
                "pending": self.spool.pending(), "failed": self.failed, "lost": self.lost,
                "down": self.down}

    def close(self, wait: float | None = None) -> None:
        """Send what waits, for at most ``wait`` seconds (default: two request timeouts),
        then report in one line what was not sent, and what had waited and went."""
        self._closing.set()
        self._thread.join(2 * self.timeout if wait is None else wait)
        pending = self.spool.pending()
        if self.resent or self.failed or self.lost or pending:
            self._report(pending)

    # the background thread -----------------------------------------------------------

    def _loop(self) -> None:
        while True:
            closing = self._closing.wait(self.flush_every)
            if self.down is None or (not closing and time.monotonic() >= self.retry_at):
                try:
                    self._drain()
                except OSError as exc:
                    self._say("spool-read", f"cannot use the spool {self.spool.path} "
                                            f"({exc.strerror or exc}); tried again")
                except Exception as exc:  # a bug met by one batch: said; the sender goes on
                    self._say("bug", f"sending failed ({type(exc).__name__}: "
                                     f"{first_line(exc)}); the points wait, tried again")
            if closing:
                return

    def _drain(self) -> None:
        """Post the spool's oldest points, a batch at a time, until none is left or InfluxDB
        stops taking them."""
        while True:
            taken = self.spool.take(self.batch)
            if not taken:
                break
            again: frozenset[int] = frozenset()
            try:
                post(self.url, self.headers, [ln for _, ln in taken], self.timeout)
                dropped = 0
            except Down as exc:
                self._went_down(exc)
                return
            except Refused as exc:
                dropped, again, self.refusal = exc.dropped, exc.again, str(exc)
                self._say(f"refused:{exc}", f"InfluxDB refused {dropped} point"
                                            f"{'s' if dropped != 1 else ''} ({exc})")
            self.spool.mark([t for i, t in enumerate(taken) if i not in again])
            self._delivered(len(taken) - len(again), dropped)
        if self.down is not None or self.back:
            self._say(f"up:{self.outages}", f"InfluxDB at {self.shown} answers again; "
                                            f"{self.back} points that waited in "
                                            f"{self.spool.path} were sent")
            self.down, self.backoff, self.back = None, BACKOFF[0], 0

    def _delivered(self, handled: int, dropped: int) -> None:
        """Count a batch InfluxDB answered: ``handled`` lines, ``dropped`` of them refused."""
        with self._counts:
            waited = min(handled, self.waiting)
            self.waiting -= waited
            self.sent += handled - dropped
            self.resent += min(waited, handled - dropped)
            self.failed += dropped
            if self.outages:
                self.back += min(waited, handled - dropped)

    def _went_down(self, exc: Exception) -> None:
        was_up, self.down = self.down is None, str(exc)  # points from now on will have waited
        if was_up:
            self._say(f"down:{exc}", f"InfluxDB at {self.shown} is not taking points ({exc}); "
                                     f"they wait in {self.spool.path}")
            self.outages += 1
            pending = self.spool.pending()
            with self._counts:
                self.waiting = max(self.waiting, pending)
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(2 * self.backoff, BACKOFF[1])

    def _count(self, lost: int = 0, waiting: int = 0) -> None:
        with self._counts:
            self.lost += lost
            self.waiting += waiting

    def _say(self, key: str, text: str) -> None:
        """One line per kind of trouble, not one per point."""
        if key not in self._said:
            self._said.add(key)
            self.err.write(f"frameqc: --influx: {text}\n")
            self.err.flush()

    def _report(self, pending: int) -> None:
        waited = f" ({self.resent} of them had waited in {self.spool.path})" \
            if self.resent else ""
        parts = [f"{self.sent} points sent{waited}"]
        if pending:
            parts.append(f"{pending} waiting in {self.spool.path} (sent when InfluxDB "
                         "answers, by the next run with this spool)")
        if self.failed:
            parts.append(f"{self.failed} refused by InfluxDB ({self.refusal})")
        if self.lost:
            parts.append(f"{self.lost} lost")
        self.err.write(f"frameqc: --influx {self.shown}: {'; '.join(parts)}\n")
        self.err.flush()
