"""Output formats: the seed's text line, JSON lines and CSV; and the operators' log."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # records come from the pipeline here, or from a server as JSON
    from .pipeline import Result

FORMATS = ("text", "json", "csv")


def text_line(rec: dict) -> str:
    """The seed's line: ``<index> <probability:.3f> <label> <path>``."""
    return f"{rec['index']} {rec['probability']:.3f} {rec['label']} {rec['path']}"


def record(r: Result, model_id: str) -> dict:
    """A result as a JSON-able dict; a failed frame is ``{"path", "error"}``."""
    if r.decision is None:
        return {"path": r.path, "error": r.error}
    d = r.decision
    return {"path": r.path, "label": d.label, "index": d.index, "probability": d.probability,
            "probabilities": dict(d.probabilities), "model": model_id,
            "seconds": round(r.seconds, 4)}


class Writer:
    """Writes records to a stream in one of FORMATS; failures go to stderr as one line."""

    def __init__(self, fmt: str, out: TextIO, err: TextIO, labels: Sequence[str]) -> None:
        self.fmt, self.out, self.err = fmt, out, err
        self.labels = list(labels)
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(out, lineterminator="\n")
            self._csv.writerow(["path", "label", "index", "probability",
                                *(f"p_{name}" for name in self.labels),
                                "model", "seconds", "error"])

    def write(self, rec: dict) -> None:
        if "error" in rec:
            self.err.write(f"frameqc: {rec['path']}: {rec['error']}\n")
            self.err.flush()
        if self.fmt == "text":
            if "error" not in rec:
                self.out.write(text_line(rec) + "\n")
        elif self.fmt == "json":
            self.out.write(json.dumps(rec) + "\n")
        elif "error" in rec:
            self._csv.writerow([rec["path"], "", "", "", *[""] * len(self.labels), "", "",
                                rec["error"]])
        else:
            probs = rec["probabilities"]
            self._csv.writerow([rec["path"], rec["label"], rec["index"], rec["probability"],
                                *(probs[n] for n in self.labels), rec["model"],
                                rec["seconds"], ""])
        self.out.flush()


def append_log(path: str | os.PathLike, rec: dict, timings: dict[str, float],
               **extra: object) -> None:
    """Append one JSON line per frame; a lock and one write keep concurrent writers whole."""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
             **rec, "timings": {k: round(v, 4) for k, v in timings.items()}, **extra}
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)


def check_appendable(path: str | os.PathLike, option: str) -> None:
    """Fail before any work when ``path`` cannot be appended to (creating it is fine)."""
    from .errors import UsageError

    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None


def prepare_dir(directory: str | os.PathLike, option: str) -> None:
    """Create ``directory`` now, so an unwritable one fails before any work."""
    from .errors import UsageError

    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {directory}: cannot create it ({exc.strerror or exc})"
                         ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {directory}: not writable")


def prepare_sort_dir(directory: str | os.PathLike, labels: Sequence[str]) -> None:
    """Make ``DIR/<label>/`` for every label now, so an unwritable DIR fails before any work."""
    for label in labels:
        prepare_dir(os.path.join(directory, label), "--sort-into")


def sort_into(directory: str | os.PathLike, rec: dict) -> str | None:
    """Link a decided frame as ``DIR/<label>/<name>``: a labelled set for a person to correct.

    The link is symbolic and absolute, so a person moving it to another label's folder
    keeps a working link. A frame already linked there is left alone; a different frame
    of the same name gets ``-1``, ``-2``... Frames with no decision or no path are skipped.
    """
    if "error" in rec or rec["path"] in ("-", "") or rec["path"].startswith("<"):
        return None
    target = os.path.abspath(rec["path"])
    folder = os.path.join(directory, rec["label"])
    stem = os.path.basename(target)
    for n in range(1000):
        link = os.path.join(folder, stem if n == 0 else f"{_stem(stem)}-{n}{_suffix(stem)}")
        try:
            os.symlink(target, link)
            return link
        except FileExistsError:
            if os.path.islink(link) and os.readlink(link) == target:
                return link
    return None


def _suffix(name: str) -> str:
    """The longest frame suffix (``.fits.gz`` whole), so a renamed link is still a frame."""
    from .frames import FRAME_SUFFIXES

    lower = name.lower()
    n = max((len(s) for s in FRAME_SUFFIXES if lower.endswith(s)), default=0)
    return name[len(name) - n:] if n else os.path.splitext(name)[1]


def _stem(name: str) -> str:
    return name[: len(name) - len(_suffix(name))]


def write_preview(directory: str | os.PathLike, r: Result) -> str:
    """Save what the network saw as ``DIR/<name>.png``, for a person checking a decision."""
    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    stem = os.path.basename(r.path.rstrip("/")) or "stdin"
    target = os.path.join(directory, stem + ".png")
    Image.fromarray(r.prepared.preview()).save(target)
    return target
