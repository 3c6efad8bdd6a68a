"""``frameqc watch``: classify each new frame in an incoming folder once, when it is complete.

The replacement for polling from cron. The model is loaded once. A frame is taken when it
has not changed for ``settle`` seconds, and its result is dropped (and the frame taken
again later) if it changed while it was read. What was done is appended to a state file
(JSON lines, like ``--log``) and read back at start, so a restart classifies nothing twice;
a frame rewritten with new content is classified again. Nothing is written in the folder.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .frames import list_frames
from .output import append_log, record
from .pipeline import Classifier

Key = tuple[str, int, int]  # name, size, mtime_ns


def default_state(directory: Path, cache: Path) -> Path:
    """One state file per watched folder, under the cache (the folder may be read-only)."""
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return cache / "watch" / f"{directory.resolve().name}-{digest}.jsonl"


def load_state(path: Path) -> set[Key]:
    """The frames already done; a line torn by a crash is ignored."""
    done: set[Key] = set()
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    done.add((entry["name"], entry["size"], entry["mtime_ns"]))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        pass
    return done


def _key(path: Path) -> Key | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return path.name, st.st_size, st.st_mtime_ns


class Watcher:
    """Polls a folder and hands each complete, not yet done frame to ``emit``."""

    def __init__(self, classifier: Classifier, directory: Path, state: Path,
                 emit: Callable[[dict, dict], None], settle: float = 2.0) -> None:
        self.classifier, self.directory, self.state = classifier, directory, state
        self.emit, self.settle = emit, settle
        self.done = load_state(state)
        self.stop = threading.Event()

    def ready(self) -> list[tuple[Path, Key]]:
        """Frames not done whose last change is at least ``settle`` seconds old."""
        now = time.time_ns()
        out = []
        for path in list_frames(self.directory):
            key = _key(path)
            if key and key not in self.done and now - key[2] >= self.settle * 1e9:
                out.append((path, key))
        return out

    def scan(self) -> int:
        """Classify what is ready now; returns how many frames were done."""
        n = 0
        for path, key in self.ready():
            if self.stop.is_set():
                break
            result = self.classifier.classify(path, name=str(path))
            if _key(path) != key:
                continue  # written to while we read it: take it again when it settles
            rec = record(result, self.classifier.model.card.model_id)
            self.state.parent.mkdir(parents=True, exist_ok=True)
            append_log(self.state, rec, result.timings, name=key[0], size=key[1],
                       mtime_ns=key[2])
            self.done.add(key)
            self.emit(rec, result.timings)
            n += 1
        return n

    def run(self, interval: float) -> None:
        """Scan every ``interval`` seconds until SIGTERM or SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        while not self.stop.is_set():
            self.scan()
            self.stop.wait(interval)
