"""Side outputs for a person: frames linked into label folders, and previews."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from frameqc.runtime.errors import UsageError

if TYPE_CHECKING:
    from frameqc.runtime.engine.pipeline import Result


def prepare_dir(directory: str | os.PathLike, option: str) -> None:
    """Create ``directory`` now, so an unwritable one fails before any work."""
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
    from frameqc.runtime.data.sources import FRAME_SUFFIXES

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
