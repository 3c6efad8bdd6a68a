"""Encodings of the record: the upstream text line, JSON lines, CSV, InfluxDB line
protocol, and the operators' log.

Each is derived from :mod:`frameqc.runtime.output.record`; nothing here names a field
but the text line's and the error's. Every text of a record is written in the one form of
:func:`~frameqc.runtime.util.text.readable` (a file name that is not UTF-8 as ``\\xHH``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TextIO

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output.record import columns, failed, flat, text_line
from frameqc.runtime.util.files import append_whole
from frameqc.runtime.util.text import local_time, readable

#: What ``--format`` offers (``evaluate`` prints figures, not records: text or json).
FORMATS = ("text", "json", "csv", "influx")


class Writer:
    """Writes records to a stream in one of FORMATS; failures go to stderr as one line."""

    def __init__(self, fmt: str, out: TextIO, err: TextIO, labels: Sequence[str],
                 tags: dict[str, str] | None = None) -> None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        self.fmt, self.out, self.err = fmt, out, err
        self.labels = list(labels)
        self.tags = tags  # the operator's --influx-tag pairs, for the influx format
        self._csv = None
        if fmt == "csv":
            import csv

            self._csv = csv.writer(out, lineterminator="\n")
            self._csv.writerow(columns(self.labels))

    def write(self, rec: dict) -> None:
        rec = shown(rec)
        if failed(rec):
            self.err.write(f"frameqc: {rec['path']}: {rec['error']}\n")
            self.err.flush()
        if self.fmt == "text":
            if not failed(rec):
                self.out.write(text_line(rec) + "\n")
        elif self.fmt == "json":
            self.out.write(json.dumps(rec) + "\n")
        elif self.fmt == "influx":
            from frameqc.runtime.output.line_protocol import line

            self.out.write(line(rec, self.tags) + "\n")
        else:
            self._csv.writerow(["" if v is None else v
                                for v in flat(rec, self.labels).values()])
        self.out.flush()


def shown(rec: dict) -> dict:
    """The record with each text in the one written form (:func:`readable`)."""
    return {k: readable(v) if isinstance(v, str) else v for k, v in rec.items()}


def log_line(rec: dict, timings: dict[str, float], **extra: object) -> bytes:
    """One ``--log`` line: when, where, the record, its timings, and what the caller adds.

    The record's texts are :func:`shown`; what the caller adds is kept as it is (the watch
    state's file name, read back by JSON to find the file again).
    """
    import socket

    entry = {"time": local_time(), "host": socket.gethostname(), **shown(rec),
             "timings": {k: round(v, 4) for k, v in timings.items()}, **extra}
    return (json.dumps(entry) + "\n").encode()


def append_log(path: str | os.PathLike, rec: dict, timings: dict[str, float],
               **extra: object) -> None:
    """Append one JSON line per frame; a lock and one write keep concurrent writers whole."""
    append_whole(path, log_line(rec, timings, **extra))


def check_appendable(path: str | os.PathLike, option: str) -> None:
    """Fail before any work when ``path`` cannot be appended to (creating it is fine)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
