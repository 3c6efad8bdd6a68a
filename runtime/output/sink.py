"""Where a command's decisions go: its output stream, ``--log``, ``--sort-into``, previews,
and any further sinks (InfluxDB, alert hooks) that a command attaches.

One sink serves ``classify`` and ``watch`` (and the server's log), so a record reaches
every destination the same way whichever command decided it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TextIO

from frameqc.runtime.output import files, formats
from frameqc.runtime.util.progress import Progress

if TYPE_CHECKING:
    from frameqc.runtime.engine.pipeline import Result

#: A further destination: called with each record and its timings; False when it could
#: not take the record (the frame is then not done).
Extra = Callable[[dict, dict], bool | None]


class Sink:
    """Writes each record, appends it to ``log``, links it into ``sort_into``, counts failures.

    A side output that fails mid-run (a full disk under ``--log``) is reported once and
    counts as a failure; the records on the output stream stay complete. Each call says
    whether every output of its record was written, so a caller that remembers what it
    has done (``watch``) remembers only frames whose decision reached every destination.
    """

    def __init__(self, fmt: str = "text", log: str | None = None, sort_into: str | None = None,
                 preview: str | None = None, out: TextIO | None = None,
                 err: TextIO | None = None, tags: dict[str, str] | None = None) -> None:
        self.fmt, self.log, self.sort_dir, self.preview = fmt, log, sort_into, preview
        self.tags = tags
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.progress: Progress | None = None
        self.writer: formats.Writer | None = None
        self.extras: list[Extra] = []
        self.done = self.failed = 0
        self.broken: set[str] = set()

    def progress_to(self, total: int) -> None:
        """Show progress on a terminal for a run of ``total`` frames (more than one)."""
        self.progress = Progress("frames", total, self.err) if total > 1 else None

    def check(self) -> None:
        """Refuse unwritable destinations before any work (one line, exit 2)."""
        if self.log:
            formats.check_appendable(self.log, "--log")
        if self.preview:
            files.prepare_dir(self.preview, "--preview")

    def start(self, labels: Sequence[str]) -> None:
        """Open the output for a model's labels; kept if a second route takes over.

        Destinations are refused by :meth:`check`, which a command calls before any work.
        """
        if self.writer is None:
            if self.sort_dir:
                files.prepare_sort_dir(self.sort_dir, labels)
            self.writer = formats.Writer(self.fmt, self.out, self.err, labels, self.tags)

    def __call__(self, rec: dict, timings: dict[str, float], result: Result | None = None
                 ) -> bool:
        """Send ``rec`` everywhere; False when a side output failed (the stream raises)."""
        self.done += 1
        self.failed += "error" in rec
        if self.progress:
            self.progress.update(self.done)
        written = True
        if self.preview and result is not None and result.prepared is not None:
            written &= self.guard("--preview", files.write_preview, self.preview, result)
        self.writer.write(rec)
        if self.log:
            written &= self.guard("--log", formats.append_log, self.log, rec, timings)
        if self.sort_dir:
            written &= self.guard("--sort-into", files.sort_into, self.sort_dir, rec)
        for extra in self.extras:
            if extra(rec, timings) is False:  # the InfluxDB point could not be kept
                self.failed += 1
                written = False
        return written

    def guard(self, option: str, write: Callable, *args) -> bool:
        """A side output that fails mid-run: one line (once per option), a failure counted."""
        try:
            write(*args)
            return True
        except OSError as exc:
            self.failed += 1
            if option not in self.broken:
                self.broken.add(option)
                self.err.write(f"frameqc: {option}: cannot write ({exc.strerror or exc}); "
                               "classifying goes on\n")
                self.err.flush()
            return False

    def close(self) -> bool:
        """End the run; True when every frame was decided and every output written."""
        if self.progress:
            self.progress.close()
        return not self.failed
