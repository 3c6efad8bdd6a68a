"""``frameqc watch``: classify each new frame in an incoming folder once, when it is complete.

The replacement for polling from cron. The model is loaded once. A frame is taken when it
has not changed for ``settle`` seconds, and its result is dropped (and the frame taken
again later) if it changed while it was read. What was done is appended to a state file
(JSON lines, like ``--log``) and read back at start, so a restart classifies nothing twice;
a frame rewritten with new content is classified again. Nothing is written in the folder.

A frame that fails is reported and tried again later (a read error may pass): on a later
scan, at least ``RETRY_AFTER`` seconds on, or on the next ``--once`` run; after
``ATTEMPTS`` failures it is left alone until it changes. What is remembered is only what
is still in the folder: the state file is rewritten without frames that have gone once it
holds twice as many lines as are needed. An error listing the folder or writing the
state is reported in one line and the watch goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from frameqc.runtime.data.sources import list_frames
from frameqc.runtime.engine.pipeline import Classifier
from frameqc.runtime.output.formats import append_log
from frameqc.runtime.output.record import record

Key = tuple[str, int, int]  # name, size, mtime_ns
ATTEMPTS = 3  # failures of one frame (unchanged) before it is given up
RETRY_AFTER = 30.0  # seconds between two tries of a failing frame in a running watch


def default_state(directory: Path, cache: Path) -> Path:
    """One state file per watched folder, under the cache (the folder may be read-only)."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return cache / "watch" / f"{directory.resolve().name}-{digest}.jsonl"


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


class Watcher:
    """Polls a folder and hands each complete, not yet done frame to ``emit``."""

    def __init__(self, classifier: Classifier, directory: Path, state: Path,
                 emit: Callable[[dict, dict], None], settle: float = 2.0,
                 err: TextIO | None = None, retry_after: float = RETRY_AFTER) -> None:
        self.classifier, self.directory, self.state = classifier, directory, state
        self.emit, self.settle, self.retry_after = emit, settle, retry_after
        self.err = err or sys.stderr
        self.done, failures, self.state_lines = load_state(state)
        # failures so far and when the last was, per frame not yet done
        self.attempts = {k: (n, -retry_after) for k, n in failures.items()}
        self.stop = threading.Event()
        self._said: str | None = None

    def warn(self, text: str) -> None:
        """One line per new problem; the same one again is not repeated every scan."""
        if text != self._said:
            self._said = text
            self.err.write(f"frameqc watch: {text}\n")
            self.err.flush()

    def ready(self) -> list[tuple[Path, Key]]:
        """Frames not done whose last change is at least ``settle`` seconds old.

        Frames no longer in the folder are forgotten here, so memory follows the folder.
        """
        now = time.time_ns()
        present = {}
        for path in list_frames(self.directory):
            key = _key(path)
            if key:
                present[key] = path
        self.done &= present.keys()
        self.attempts = {k: a for k, a in self.attempts.items() if k in present}
        retry = time.monotonic() - self.retry_after
        return [(path, key) for key, path in sorted(present.items(), key=lambda kv: kv[1])
                if key not in self.done and now - key[2] >= self.settle * 1e9
                and self.attempts.get(key, (0, retry))[1] <= retry]

    def scan(self) -> int:
        """Classify what is ready now; returns how many frames were done."""
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
            rec = record(result, self.classifier.model.card)
            failures = self.attempts.pop(key, (0, 0.0))[0] + (result.error is not None)
            if result.error is not None and failures < ATTEMPTS:
                self.attempts[key] = (failures, time.monotonic())  # perhaps a passing error
            else:
                self.done.add(key)
            self.remember(key, rec, result.timings)
            self.emit(rec, result.timings)
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
        tmp = self.state.with_name(self.state.name + ".tmp")
        lines = [{"name": k[0], "size": k[1], "mtime_ns": k[2]} for k in sorted(self.done)]
        for k, (n, _) in sorted(self.attempts.items()):
            lines += [{"name": k[0], "size": k[1], "mtime_ns": k[2], "error": "failed"}] * n
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(line) + "\n" for line in lines)
            os.replace(tmp, self.state)
            self.state_lines = len(lines)
        except OSError as exc:
            self.warn(f"cannot rewrite the state file {self.state} ({exc.strerror or exc})")

    def run(self, interval: float) -> None:
        """Scan every ``interval`` seconds until SIGTERM or SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        while not self.stop.is_set():
            self.scan()
            self.stop.wait(interval)
