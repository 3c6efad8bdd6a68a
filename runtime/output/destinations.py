"""Where a frame's decision goes: the one place a result becomes a record, and the one
object that sends the record to every destination a command asked for.

The destinations are the output stream (``--format``), ``--log``, ``--sort-into``,
``--preview``, and the senders a command attaches (InfluxDB, alert hooks; the archive's
Parquet rows). ``classify``, ``watch``, ``serve``, ``label`` and ``archive`` all send
through :class:`Destinations`, so a record reaches every destination the same way
whichever command decided it; each says, through :class:`OnFailure`, what a destination
that cannot be written does to its run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, TextIO

from frameqc.runtime.output import folders, formats
from frameqc.runtime.output.record import record
from frameqc.runtime.util.progress import Progress

if TYPE_CHECKING:
    from frameqc.runtime.engine.pipeline import Result
    from frameqc.runtime.model.card import ModelCard

#: A further destination: called with each record and its timings.
Sender = Callable[[dict, dict], bool | None]


class Answer(NamedTuple):
    """A frame decided by a server: the record it built (here, in its process) and timings."""

    record: dict
    timings: dict[str, float]


class Sent(NamedTuple):
    """What :meth:`Destinations.send` did: the record, and whether every destination took it."""

    record: dict
    written: bool


class OnFailure(NamedTuple):
    """What a destination that cannot be written (a full disk under ``--log``) does to a run.

    ``counts``: the frame counts as failed (exit 1). ``every``: seconds between two
    reports of one destination (None: once a run). ``line``: the report, from the
    option, where it writes, and why it cannot.
    """

    counts: bool
    every: float | None
    line: Callable[[str, str, str], str]


#: A command's run (``classify``, ``watch``): reported once, counted, classifying goes on.
A_RUN = OnFailure(True, None, lambda option, where, why:
                  f"frameqc: {option}: cannot write ({why}); classifying goes on\n")


class Destinations:
    """Builds each frame's record and sends it to the stream, ``log``, ``sort_into``,
    ``preview`` and the senders; counts frames and failures.

    ``fmt`` None writes no stream (the server, the archive, the labelling app). A
    destination that fails mid-run is reported as ``on_failure`` says; the records on
    the stream stay complete (a failing stream raises). :meth:`send` says whether every
    destination took the record, so a caller that remembers what it has done (``watch``)
    remembers only frames whose decision went everywhere.
    """

    def __init__(self, fmt: str | None = "text", log: str | None = None,
                 sort_into: str | None = None, preview: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None,
                 tags: dict[str, str] | None = None, on_failure: OnFailure = A_RUN,
                 senders: Sequence[Sender] = ()) -> None:
        self.fmt, self.log, self.sort_dir, self.preview = fmt, log, sort_into, preview
        self.tags, self.on_failure = tags, on_failure
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.progress: Progress | None = None
        self.writer: formats.Writer | None = None
        self.senders: list[Sender] = list(senders)
        self.done = self.failed = 0
        self.reported: dict[str, float] = {}  # option -> when its failure was last said

    def progress_to(self, total: int) -> None:
        """Show progress on a terminal for a run of ``total`` frames (more than one)."""
        self.progress = Progress("frames", total, self.err) if total > 1 else None

    def check(self) -> None:
        """Refuse unwritable destinations before any work (one line, exit 2)."""
        if self.log:
            formats.check_appendable(self.log, "--log")
        if self.preview:
            folders.prepare_dir(self.preview, "--preview")

    def start(self, labels: Sequence[str]) -> None:
        """Open the output for a model's labels (before the first frame)."""
        if self.writer is None:
            if self.sort_dir:
                folders.prepare_sort_dir(self.sort_dir, labels)
            if self.fmt is not None:
                self.writer = formats.Writer(self.fmt, self.out, self.err, labels, self.tags)

    def send(self, decided: Result | Answer, card: ModelCard | None = None,
             **log_fields: object) -> Sent:
        """Turn a result (with its model's ``card``) into its record, and send it everywhere.

        An :class:`Answer` already holds its record. ``log_fields`` go into the ``--log``
        line only (the server's client).
        """
        if self.writer is None and self.fmt is not None:
            raise RuntimeError("Destinations.send before start(): the stream has no labels")
        if isinstance(decided, Answer):
            rec, timings, result = decided.record, decided.timings, None
        else:
            rec, timings, result = record(decided, card), decided.timings, decided
        self.done += 1
        self.failed += "error" in rec
        if self.progress:
            self.progress.update(self.done)
        written = True
        if self.preview and result is not None and result.prepared is not None:
            written &= self._guard("--preview", self.preview, folders.write_preview,
                                   self.preview, result)
        if self.writer is not None:  # None only for fmt None: a caller that keeps no stream
            self.writer.write(rec)
        if self.log:
            written &= self._guard("--log", self.log, formats.append_log, self.log, rec,
                                   timings, **log_fields)
        if self.sort_dir:
            written &= self._guard("--sort-into", self.sort_dir, folders.sort_into,
                                   self.sort_dir, rec)
        for sender in self.senders:
            if sender(rec, timings) is False:  # the InfluxDB point could not be kept
                self.failed += 1
                written = False
        return Sent(rec, written)

    def _guard(self, option: str, where: str, write: Callable, *args, **kwargs) -> bool:
        """A destination that fails: reported as :attr:`on_failure` says; False."""
        try:
            write(*args, **kwargs)
            return True
        except OSError as exc:
            policy = self.on_failure
            self.failed += policy.counts
            now = time.monotonic()
            last = self.reported.get(option)
            if last is None or (policy.every is not None and now - last >= policy.every):
                self.reported[option] = now
                self.err.write(policy.line(option, where, exc.strerror or str(exc)))
                self.err.flush()
            return False

    def close(self) -> bool:
        """End the run; True when every frame was decided and every output written."""
        if self.progress:
            self.progress.close()
        return not self.failed
