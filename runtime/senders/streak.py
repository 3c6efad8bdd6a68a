"""``--alert-after N``: the streak of consecutive alerts, kept on disk across runs.

A cron ``watch --once`` decides a frame or two per run, and a resident ``watch`` or
``serve`` may be restarted mid-streak: the count lives in a small file beside the watch
state or ``--log``, so that N alerts in a row fire once, however many processes saw them.
The file also names the last alert's frame: ``watch`` takes a frame again when its
decision could not be written everywhere, and that frame must not alert twice (``watch``
keeps the file with or without ``--alert-after``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from frameqc.runtime.util.files import write_atomic

STREAK_SUFFIX = ".alert-streak"


def streak_beside(path: str | os.PathLike | None) -> Path | None:
    """Where the streak is kept: beside ``path`` (the watch state or ``--log``); None keeps
    it in memory only."""
    return None if path is None else Path(f"{os.fspath(path)}{STREAK_SUFFIX}")


def frame_identity(path: object) -> str | None:
    """A frame file as it is now: its name, size and modification time. The same frame
    decided again has the same identity; a new file written under the same name has
    another. None where there is no file to look at (standard input, a frame gone)."""
    from frameqc.runtime.util.text import on_disk

    if not isinstance(path, str) or path == "-":
        return None
    try:
        st = os.stat(on_disk(path))
    except (OSError, ValueError):
        return None
    return f"{path} {st.st_size} {st.st_mtime_ns}"


class Streak:
    """The ``--alert-after N`` rule: True once per run of N consecutive alerts.

    Without N, True for every alert. ``count`` is the length of the current run. An alert
    for the frame that was the last alert (the same :func:`frame_identity`: ``watch`` takes
    a frame again when its decision could not be written everywhere, a full disk under
    ``--log``) neither counts nor fires again. With a ``path``, the count and that frame
    are read from it at start and written to it (atomically) when they change (the count
    up to N + 1), so a streak spans cron runs and restarts; a missing or unreadable file
    is a streak of 0.
    """

    def __init__(self, after: int | None = None, path: Path | None = None) -> None:
        self.after, self.count, self.path = after, 0, path
        self.last: str | None = None  # the frame of the last alert, while the streak lasts
        self.problem: str | None = None  # the last failure to read or write the file
        if path is not None:
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))
                count, last = kept["streak"], kept.get("last")
                if isinstance(count, int) and count >= 0:
                    self.count = count
                    self.last = last if isinstance(last, str) else None
            except FileNotFoundError:
                pass
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                self.problem = f"cannot read {path} ({getattr(exc, 'strerror', None) or exc})"

    def __call__(self, alert: bool | None, frame: str | None = None) -> bool:
        """``alert`` is None for a frame with no decision (it changes nothing); ``frame``
        is the alert frame's :func:`frame_identity`."""
        if alert is None or (alert and frame is not None and frame == self.last):
            return False
        before, last = self.count, self.last
        self.count, self.last = (self.count + 1, frame) if alert else (0, None)
        top = (self.after or 0) + 1  # past N + 1 the rule sees no difference
        if min(before, top) != min(self.count, top) or last != self.last:
            self._keep()
        return bool(alert) and (self.after is None or self.count == self.after)

    def _keep(self) -> None:
        if self.path is None:
            return
        try:
            write_atomic(self.path, json.dumps({"streak": self.count, "last": self.last}) + "\n")
            self.problem = None
        except OSError as exc:
            self.problem = f"cannot write {self.path} ({exc.strerror or exc})"
