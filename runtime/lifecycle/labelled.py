"""Labelled frames: what a person says each frame is, for evaluating and training models.

Two forms, both common in the field:

- a folder with one sub-folder per label, ``DATA/Shutter/*.fits``, ``DATA/OK/*.fits``
  (torchvision's ``ImageFolder`` convention; sub-folders are searched recursively);
- a CSV file of ``path,label`` rows (an optional ``path,label`` header; relative paths
  are taken from the CSV's folder).

Labels are matched to a model's outputs by name, never by position, so touse1 (OK,
Shutter) and touse2 (Shutter, OK) are judged on the same folder.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from frameqc.runtime.data.sources import walk_frames
from frameqc.runtime.errors import UsageError


@dataclass(frozen=True)
class LabelledSet:
    """Frames with their true labels, in a stable order (sorted by label, then path).

    Attributes
    ----------
    items : tuple of (path, label)
        Absolute paths.
    root : str
        The folder or CSV file the set was read from (for messages and the digest).
    """

    items: tuple[tuple[str, str], ...]
    root: str = ""

    @classmethod
    def load(cls, source: str | os.PathLike, labels: Sequence[str] | None = None
             ) -> LabelledSet:
        """Read a labelled folder or CSV; with ``labels``, refuse any label not among them.

        Raises
        ------
        UsageError
            No such folder or file, an unreadable CSV, no frames, or a label the model
            does not know (naming it, and how many frames carry it).
        """
        path = Path(source)
        if path.is_dir():
            items = _from_folder(path)
        elif path.is_file():
            items = _from_csv(path)
        else:
            raise UsageError(f"{path}: no such labelled folder or CSV file")
        if not items:
            raise UsageError(f"{path}: no labelled frames (expected DATA/<label>/*.fits "
                             "or a CSV of path,label)")
        data = cls(tuple(sorted(items, key=lambda it: (it[1], it[0]))), str(path))
        if labels is not None:
            data.check_labels(labels)
        return data

    def check_labels(self, labels: Sequence[str]) -> None:
        unknown = {k: n for k, n in self.counts().items() if k not in labels}
        if unknown:
            name, n = sorted(unknown.items())[0]
            raise UsageError(f"{self.root}: label {name!r} ({n} frames) is not one of the "
                             f"model's labels {', '.join(labels)}")

    @property
    def paths(self) -> list[str]:
        return [p for p, _ in self.items]

    @property
    def truths(self) -> list[str]:
        return [label for _, label in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """Frames per label, sorted by label."""
        return dict(sorted(Counter(self.truths).items()))

    def digest(self) -> str:
        """sha256 of the frames alone: each ``label<TAB>path<TAB>size``, the path relative.

        Paths are taken relative to the set's folder (a CSV's: its own folder), both made
        absolute first, so the same files under the same labels give the same digest
        however the root was named (``labelled/``, ``./labelled``, its absolute path) and
        wherever the folder is mounted. Sizes tell a changed frame from the one recorded
        without reading every frame; a frame gone since is recorded as size -1.
        """
        if not self.root:
            base = ""
        elif os.path.isdir(self.root):
            base = os.path.abspath(self.root)  # as the folder's frames were named
        else:
            base = os.path.dirname(os.path.realpath(self.root))  # as a CSV's rows were
        h = hashlib.sha256()
        for p, label in self.items:
            path = os.path.abspath(p)
            rel = os.path.relpath(path, base) if base else path
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            h.update(f"{label}\t{rel}\t{size}\n".encode(errors="surrogateescape"))
        return h.hexdigest()

    def split(self, fraction: float, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
        """``(rest, held_out)``: about ``fraction`` of each label held out, drawn by ``seed``.

        Every label with two or more frames keeps at least one on each side.
        """
        if not 0.0 < fraction < 1.0:
            raise UsageError(f"the validation fraction must be between 0 and 1, not {fraction}")
        rng = random.Random(seed)
        keep, held = [], []
        for label in self.counts():
            group = [it for it in self.items if it[1] == label]
            rng.shuffle(group)
            n = round(len(group) * fraction)
            n = min(max(n, 1), len(group) - 1) if len(group) > 1 else 0
            held += group[:n]
            keep += group[n:]
        return (LabelledSet(tuple(sorted(keep, key=lambda it: (it[1], it[0]))), self.root),
                LabelledSet(tuple(sorted(held, key=lambda it: (it[1], it[0]))), self.root))


def _from_folder(root: Path) -> list[tuple[str, str]]:
    return [(os.path.abspath(path), sub.name)
            for sub in sorted(p for p in root.iterdir()
                              if p.is_dir() and not p.name.startswith("."))
            for path in walk_frames(sub, followlinks=True)]


def _from_csv(path: Path) -> list[tuple[str, str]]:
    base = path.resolve().parent
    items = []
    try:
        # a path's bytes that are not UTF-8 (as frameqc label writes them) stay as they are
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if not row or not "".join(row).strip() or row[0].startswith("#"):
                    continue
                if n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                if len(row) < 2 or not row[0].strip() or not row[1].strip():
                    raise UsageError(f"{path}:{n}: expected 'path,label', got {','.join(row)!r}")
                items.append((os.path.normpath(base / row[0].strip()), row[1].strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: not a readable CSV of path,label ({exc})") from None
    return items
