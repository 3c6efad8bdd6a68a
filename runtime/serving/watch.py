"""``frameqc watch``: classify each new frame in an incoming folder once, when it is complete.

The replacement for polling from cron. The model is loaded once. A frame is taken when it
has not changed for ``settle`` seconds, and its result is dropped (and the frame taken
again later) if it changed while it was read. What was done is appended to a state file
(JSON lines, like ``--log``) and read back at start, so a restart classifies nothing twice;
a frame rewritten with new content is classified again. Nothing is written in the folder.

A frame is done only once its decision was written to every output (the stream, ``--log``
and the other destinations): if one fails, the frame is not remembered, the scan
stops there, and a later scan takes it again (a decision is written at least once, never
lost). A frame that fails is reported and tried again later (a read error may pass): on a
later scan, at least ``RETRY_AFTER`` seconds on, or on the next ``--once`` run; after
``ATTEMPTS`` failures it is left alone until it changes.

What is remembered is only what is still in the folder, but forgetting needs evidence: a
frame is forgotten when the folder lists other frames and not this one. A listing with no
frames at all (a network mount that dropped leaves an empty mount point) forgets nothing,
and neither does a frame whose ``stat`` fails (it is reported). The state file is
rewritten without frames that have gone once it holds twice as many lines as are needed.
An error listing the folder or writing the state is reported in one line and the watch
goes on.

One watcher per state file: a lock (``STATE.lock``, holding the owner's pid) is taken
before the state is read, and a second watcher on the same state stops with one line.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from frameqc.runtime.data.sources import is_frame_name
from frameqc.runtime.engine.pipeline import Classifier
from frameqc.runtime.errors import UsageError
from frameqc.runtime.output.destinations import Destinations
from frameqc.runtime.output.formats import append_log
from frameqc.runtime.util.text import readable

Key = tuple[str, int, int]  # name, size, mtime_ns
ATTEMPTS = 3  # failures of one frame (unchanged) before it is given up
RETRY_AFTER = 30.0  # seconds between two tries of a failing frame in a running watch


def default_state(directory: Path, cache: Path) -> Path:
    """One state file per watched folder, under the cache (the folder may be read-only)."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return cache / "watch" / f"{directory.resolve().name}-{digest}.jsonl"


def lock_state(path: Path) -> int:
    """Take the state's lock (``PATH.lock``) for this process; a one-line error if held.

    The lock is a ``flock`` on a file beside the state (the state itself is replaced
    when it is compacted); it goes with the process, so a killed watcher leaves none.
    """
    if path.is_dir():
        raise UsageError(f"--state {path}: a directory; name a file")
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UsageError(f"--state {path}: cannot use it ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise UsageError(f"--state {path}: cannot lock it ({exc.strerror or exc})") from None
        raise UsageError(f"--state {path}: another watch (pid {owner}) is using it; "
                         "one watch per state file") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def load_state(path: Path) -> tuple[set[Key], dict[Key, int], int]:
    """Frames done, failures of the others, and the file's line count (torn lines ignored)."""
    done: set[Key] = set()
    failures: dict[Key, int] = {}
    lines = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                lines += 1
                try:
                    entry = json.loads(line)
                    key = (entry["name"], entry["size"], entry["mtime_ns"])
                except (ValueError, KeyError, TypeError):
                    continue
                if "error" in entry:
                    failures[key] = failures.get(key, 0) + 1
                else:
                    done.add(key)
    except FileNotFoundError:
        pass
    done |= {k for k, n in failures.items() if n >= ATTEMPTS}
    return done, {k: n for k, n in failures.items() if k not in done}, lines


def _key(path: Path) -> Key | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return path.name, st.st_size, st.st_mtime_ns


def listing(directory: Path) -> tuple[dict[Key, Path], dict[str, OSError]]:
    """The regular files with frame names directly in ``directory``, by key, sorted by name,
    and the names whose ``stat`` failed (a file that vanished since the listing is neither).

    An error listing the folder itself raises :class:`OSError`.
    """
    present: dict[Key, Path] = {}
    unknown: dict[str, OSError] = {}
    with os.scandir(directory) as entries:
        names = sorted(e.name for e in entries if is_frame_name(e.name))
    for name in names:
        path = directory / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            unknown[name] = exc
            continue
        if stat.S_ISREG(st.st_mode):
            present[(name, st.st_size, st.st_mtime_ns)] = path
    return present, unknown


class Watcher:
    """Polls a folder and sends each complete, not yet done frame to ``destinations``.

    A frame whose decision could not be written everywhere (:meth:`Destinations.send`
    says so, or raises :class:`OSError`) is not done. ``destinations`` may be a plain
    callable taking each record and its timings (its only destination). The state's lock
    is held until :meth:`close`.
    """

    def __init__(self, classifier: Classifier, directory: Path, state: Path,
                 destinations: Destinations | Callable[[dict, dict], object],
                 settle: float = 2.0, err: TextIO | None = None,
                 retry_after: float = RETRY_AFTER) -> None:
        self.classifier, self.directory, self.state = classifier, directory, state
        if not isinstance(destinations, Destinations):
            destinations = Destinations(None, err=err, senders=[destinations])
        self.destinations, self.settle, self.retry_after = destinations, settle, retry_after
        self.err = err or sys.stderr
        self._lock = lock_state(state)
        self.done, failures, self.state_lines = load_state(state)
        # failures so far and when the last was, per frame not yet done
        self.attempts = {k: (n, -retry_after) for k, n in failures.items()}
        self.unsettled = 0  # frames seen by the last scan, not yet settled
        self.unwritten = 0  # decisions that could not be written (their frames not done)
        self.stop = threading.Event()
        self._said: set[str] = set()  # said by the last scan: not repeated while it lasts
        self._saying: set[str] = set()

    def close(self) -> None:
        """Let another watcher have the state."""
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def warn(self, text: str) -> None:
        """One line per new problem; one that goes on is not repeated every scan."""
        self._saying.add(text)
        if text not in self._said:
            self._said.add(text)
            self.err.write(f"frameqc watch: {text}\n")
            self.err.flush()

    def ready(self) -> list[tuple[Path, Key]]:
        """Frames not done whose last change is at least ``settle`` seconds old.

        Frames no longer in the folder are forgotten here, so memory follows the folder;
        but only on evidence (module docstring): never on a listing without frames, never
        a frame whose ``stat`` failed.
        """
        now = time.time_ns()
        present, unknown = listing(self.directory)
        for name, exc in unknown.items():
            self.warn(f"{readable(str(self.directory / name))}: cannot read its state "
                      f"({exc.strerror or exc}); left until it can")
        if present:
            def kept(k: Key) -> bool:
                return k in present or k[0] in unknown

            self.done = {k for k in self.done if kept(k)}
            self.attempts = {k: a for k, a in self.attempts.items() if kept(k)}
        retry = time.monotonic() - self.retry_after
        todo = [(path, key) for key, path in present.items() if key not in self.done
                and self.attempts.get(key, (0, retry))[1] <= retry]
        settled = [(path, key) for path, key in todo if now - key[2] >= self.settle * 1e9]
        self.unsettled = len(todo) - len(settled)
        return settled

    def scan(self) -> int:
        """Classify what is ready now; returns how many frames were done."""
        self._said, self._saying = self._saying, set()
        try:
            ready = self.ready()
        except OSError as exc:
            self.warn(f"cannot list {self.directory} ({exc.strerror or exc}); trying again")
            return 0
        n = 0
        for path, key in ready:
            if self.stop.is_set():
                break
            result = self.classifier.classify(path, name=str(path))
            if _key(path) != key:
                continue  # written to while we read it: take it again when it settles
            try:
                rec, written = self.destinations.send(result, self.classifier.card)
                why = "an output failed"
            except OSError as exc:
                rec, written, why = None, False, f"cannot write ({exc.strerror or exc})"
            if not written:
                self.unwritten += 1
                self.warn(f"{readable(str(path))}: its decision could not be written ({why}); "
                          "not done, taken again by a later scan")
                break  # the outputs are failing: leave the rest for a later scan
            failures = self.attempts.pop(key, (0, 0.0))[0] + (result.error is not None)
            if result.error is not None and failures < ATTEMPTS:
                self.attempts[key] = (failures, time.monotonic())  # perhaps a passing error
            else:
                self.done.add(key)
            self.remember(key, rec, result.timings)
            n += 1
        self.compact()
        return n

    def remember(self, key: Key, rec: dict, timings: dict[str, float]) -> None:
        try:
            self.state.parent.mkdir(parents=True, exist_ok=True)
            append_log(self.state, rec, timings, name=key[0], size=key[1], mtime_ns=key[2])
            self.state_lines += 1
        except OSError as exc:
            self.warn(f"cannot write the state file {self.state} ({exc.strerror or exc}); "
                      "a restart may classify some frames again")

    def compact(self) -> None:
        """Rewrite the state with only the frames still there, once it is twice too long."""
        needed = len(self.done) + sum(n for n, _ in self.attempts.values())
        if self.state_lines <= 2 * needed + 64:
            return
        lines = [{"name": k[0], "size": k[1], "mtime_ns": k[2]} for k in sorted(self.done)]
        for k, (n, _) in sorted(self.attempts.items()):
            lines += [{"name": k[0], "size": k[1], "mtime_ns": k[2], "error": "failed"}] * n
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.state.name}.", suffix=".tmp",
                                       dir=self.state.parent)
            with open(fd, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(line) + "\n" for line in lines)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.state)
            tmp = None
            self.state_lines = len(lines)
        except OSError as exc:
            self.warn(f"cannot rewrite the state file {self.state} ({exc.strerror or exc})")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def run(self, interval: float) -> None:
        """Scan every ``interval`` seconds until SIGTERM or SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        while not self.stop.is_set():
            self.scan()
            self.stop.wait(interval)
