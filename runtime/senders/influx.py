"""The InfluxDB sender: never blocks classification, loses no point it can keep.

Classification only puts a line on a bounded queue. A background thread posts batches;
while InfluxDB does not answer, batches go to a spool file and are resent, oldest first,
once it answers again (by this process, or the next one using the same spool). Points
that can be neither sent nor spooled are counted and reported in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output.line_protocol import line
from frameqc.runtime.util.files import append_whole

BATCH = 500  # points per request
FLUSH_EVERY = 1.0  # seconds a point may wait for its batch
QUEUE_MAX = 10000  # points waiting for the sender; beyond this they are counted as lost
BACKOFF = (1.0, 60.0)  # first and longest wait between two tries while InfluxDB is down
#: Environment variable holding an InfluxDB 2 token (``Authorization: Token ...``).
TOKEN_ENV = "FRAMEQC_INFLUX_TOKEN"
TIMEOUT = 5.0  # seconds per HTTP request


# -- where to send -------------------------------------------------------------------------

def write_url(url: str) -> tuple[str, dict[str, str]]:
    """The write endpoint and the headers for ``--influx URL``.

    InfluxDB 1.x: ``http://HOST:8086/write?db=DB`` (``rp``, ``u``, ``p`` as the server
    takes them). InfluxDB 2: ``http://HOST:8086/api/v2/write?org=ORG&bucket=BUCKET`` with
    the token in ``$FRAMEQC_INFLUX_TOKEN``. The precision is always nanoseconds.
    """
    import urllib.parse  # here, not at the top: --format influx and a one-shot stay light

    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--influx wants an http(s) URL such as "
                         f"http://sdb:8086/write?db=frameqc, not {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2/write"):
        if not query.get("bucket") or not query.get("org"):
            raise UsageError("--influx: an InfluxDB 2 URL needs ?org=ORG&bucket=BUCKET")
        if not os.environ.get(TOKEN_ENV):
            raise UsageError(f"--influx: an InfluxDB 2 URL needs the token in ${TOKEN_ENV}")
        headers["Authorization"] = f"Token {os.environ[TOKEN_ENV]}"
    elif path.endswith("/write"):
        if not query.get("db"):
            raise UsageError("--influx: an InfluxDB 1.x write URL needs ?db=DATABASE")
    else:
        raise UsageError(f"--influx: {url!r} is not a write URL: use "
                         "http://HOST:8086/write?db=DB (1.x) or "
                         "http://HOST:8086/api/v2/write?org=ORG&bucket=BUCKET (2.x)")
    query["precision"] = "ns"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), headers


class Refused(Exception):
    """InfluxDB answered and refused the points (bad data): resending will not help."""


class Down(Exception):
    """InfluxDB did not answer, or cannot take points now: worth trying again later."""


def post(url: str, headers: dict[str, str], lines: Sequence[str],
         timeout: float = TIMEOUT) -> None:
    """Send points in one request; :class:`Refused` or :class:`Down` when they were not."""
    import urllib.error
    import urllib.request

    body = ("\n".join(lines) + "\n").encode()
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        reason = _reason(exc)
        if exc.code == 400:  # a field of another type, a line it cannot parse
            raise Refused(f"HTTP 400: {reason}") from None
        raise Down(f"HTTP {exc.code}: {reason}") from None  # 401/403/404: fixable; 5xx
    except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
        raise Down(str(getattr(exc, "reason", None) or exc) or type(exc).__name__) from None


def _reason(exc: Exception) -> str:
    """The first line of what an HTTP error's body says."""
    try:
        text = exc.read().decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return (text.splitlines() or [str(exc.reason)])[0][:200]


# -- the spool -----------------------------------------------------------------------------

class Spool:
    """A file of points not yet delivered, shared safely by processes using the same one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, lines: Iterable[str]) -> None:
        data = "".join(f"{ln}\n" for ln in lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_whole(self.path, data)

    def pending(self) -> int:
        try:
            with open(self.path, "rb") as fh:
                return sum(1 for ln in fh if ln.strip())
        except OSError:
            return 0

    def drain(self, send) -> int:
        """Send what the spool holds, oldest first, in batches; keep what was not sent.

        ``send(lines)`` raises :class:`Down` to stop (the rest stays), :class:`Refused` to
        drop a batch InfluxDB will never take. Returns how many points were sent.
        """
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return 0
        sent = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as fh:
                lines = [ln.rstrip("\n") for ln in fh if ln.strip()]
            done = 0
            try:
                while done < len(lines):
                    batch = lines[done:done + BATCH]
                    try:
                        send(batch)
                        sent += len(batch)
                    except Refused:
                        pass
                    done += len(batch)
            finally:
                rest = "".join(f"{ln}\n" for ln in lines[done:]).encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, rest)
                os.ftruncate(fd, len(rest))
        finally:
            os.close(fd)
        return sent


# -- the sender ----------------------------------------------------------------------------

class InfluxSender:
    """A destination of :class:`~frameqc.runtime.output.destinations.Destinations`: each
    record as a point.

    Parameters
    ----------
    url : str
        ``--influx URL`` (see :func:`write_url`).
    spool : path
        Where undelivered points wait (beside the log or the watch state).
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
        self.queue: queue.Queue[str | None] = queue.Queue(QUEUE_MAX)
        self.sent = self.spooled = self.resent = self.failed = self.lost = 0
        self.down: str | None = None  # why InfluxDB is not taking points, while it is not
        self.retry_at = 0.0
        self.backoff = BACKOFF[0]
        self._said: set[str] = set()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="frameqc-influx", daemon=True)
        self._thread.start()

    def __call__(self, rec: dict, timings: dict[str, float]) -> None:
        try:
            self.queue.put_nowait(line(rec, self.tags))
        except queue.Full:
            self.lost += 1
            self._say("queue", f"more than {QUEUE_MAX} points waiting; points are being "
                               "dropped and counted")

    def health(self) -> dict:
        """What ``status`` shows: waiting, sent, spooled (and pending), refused, lost."""
        return {"sink": "influx", "url": self.shown, "queue": self.queue.qsize(),
                "sent": self.sent, "spooled": self.spooled, "resent": self.resent,
                "pending": self.spool.pending(), "failed": self.failed, "lost": self.lost,
                "down": self.down}

    def close(self, wait: float | None = None) -> None:
        """Send what is queued (spooling what cannot go), then report once what was not sent.

        ``wait`` bounds the time spent (default: two request timeouts).
        """
        self._closing.set()
        with contextlib.suppress(queue.Full):  # full: the thread sees _closing instead
            self.queue.put_nowait(None)
        self._thread.join(2 * self.timeout if wait is None else wait)
        leftover: list[str] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftover.append(item)
        if leftover:
            self._to_spool(leftover)
        if self.spooled or self.lost or self.failed:
            self._report()

    # the background thread -----------------------------------------------------------

    def _loop(self) -> None:
        closing = False
        while not closing:
            batch, closing = self._collect()
            if batch:
                self._deliver(batch)
            elif not closing and time.monotonic() >= self.retry_at:
                self._resend()
        if self.down is None:
            self._resend()

    def _collect(self) -> tuple[list[str], bool]:
        """Up to a batch of points, waiting at most ``flush_every`` for them; and whether
        the sender is closing."""
        batch: list[str] = []
        deadline = time.monotonic() + self.flush_every
        while len(batch) < self.batch:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return batch, self._closing.is_set() and not batch
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _deliver(self, batch: list[str]) -> None:
        if self.down is not None and time.monotonic() < self.retry_at:
            self._to_spool(batch)  # still backing off: no request, no delay for the queue
            return
        if self.down is not None:
            self._resend()  # the oldest first; it tells whether InfluxDB is back
            if self.down is not None:
                self._to_spool(batch)
                return
        try:
            self._send(batch)
            self.sent += len(batch)
        except Refused as exc:
            self._refused(len(batch), exc)
        except Down as exc:
            self._went_down(exc)
            self._to_spool(batch)

    def _send(self, lines: Sequence[str]) -> None:
        post(self.url, self.headers, lines, self.timeout)

    def _resend(self) -> None:
        """Empty the spool while InfluxDB takes points; note when it stops."""
        def send(lines: Sequence[str]) -> None:
            try:
                self._send(lines)
            except Refused as exc:
                self._refused(len(lines), exc)
                raise
            self.resent += len(lines)

        try:
            self.spool.drain(send)
        except Down as exc:
            self._went_down(exc)
            return
        except OSError as exc:
            self._say("spool-read", f"cannot read the spool {self.spool.path} "
                                    f"({exc.strerror or exc})")
            return
        if self.down is not None:
            self._say(f"up:{self.down}", f"InfluxDB at {self.shown} answers again; "
                                         "spooled points resent")
        self.down, self.backoff = None, BACKOFF[0]

    def _went_down(self, exc: Exception) -> None:
        if self.down is None:
            self._say(f"down:{exc}", f"InfluxDB at {self.shown} is not taking points ({exc}); "
                                     f"they wait in {self.spool.path}")
        self.down = str(exc)
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(2 * self.backoff, BACKOFF[1])

    def _refused(self, n: int, exc: Exception) -> None:
        self.failed += n
        self._say(f"refused:{exc}", f"InfluxDB refused {n} points ({exc})")

    def _to_spool(self, lines: list[str]) -> None:
        try:
            self.spool.append(lines)
            self.spooled += len(lines)
        except OSError as exc:
            self.lost += len(lines)
            self._say("spool", f"cannot write the spool {self.spool.path} "
                               f"({exc.strerror or exc}); points are being lost and counted")

    def _say(self, key: str, text: str) -> None:
        """One line per kind of trouble, not one per point."""
        if key not in self._said:
            self._said.add(key)
            self.err.write(f"frameqc: --influx: {text}\n")
            self.err.flush()

    def _report(self) -> None:
        parts = [f"{self.sent + self.resent} points sent"]
        pending = self.spool.pending()
        if pending:
            parts.append(f"{pending} waiting in {self.spool.path} (sent when InfluxDB "
                         "answers, by the next run with this spool)")
        if self.failed:
            parts.append(f"{self.failed} refused by InfluxDB")
        if self.lost:
            parts.append(f"{self.lost} lost")
        self.err.write(f"frameqc: --influx {self.shown}: {'; '.join(parts)}\n")
        self.err.flush()
