"""The images the network saw, for pages: made with the model's recipe, once per frame.

``evaluate --report`` shows them for mistakes and disagreements, ``night`` for alerts and
doubtful frames; both read and prepare a frame here, as ``classify`` does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frameqc.runtime.data.facts import header_facts
from frameqc.runtime.data.reader import read_frame
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.lifecycle.page import write_png
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.recipes import Recipe, recipe_classes, recipe_for
from frameqc.runtime.util.files import write_atomic

#: Where thumbnails are kept in a page's folder.
SEEN = "seen"


def recipes_for(card: ModelCard | None) -> list[Recipe]:
    """The card's recipe; without a card, the default recipe of each kind of frame."""
    if card is not None:
        return [recipe_for(card)]
    return [cls() for cls in recipe_classes()]


def preview(path: str, recipes: Sequence[Recipe]) -> np.ndarray | None:
    """What the network saw of the frame at ``path`` (uint8), or None when it cannot be read."""
    try:
        frame = read_frame(path)
        recipe = next((r for r in recipes if frame.kind in r.kinds), recipes[0])
        return recipe.prepare(frame).preview()
    except (FrameError, UsageError, MemoryError):
        return None


class Thumbnails:
    """The images the network saw, made once per frame version and kept in ``DIR/seen``.

    With a model, its card's recipe; without, the default recipe of the frame's kind
    (asinh for FITS with its default percentiles, rgb for JPEG/PNG). A frame that cannot
    be read is remembered as such (``.none``) until it changes; one that has moved is
    looked for again at the next build.
    """

    def __init__(self, out: Path, card: ModelCard | None) -> None:
        self.dir = out / SEEN
        self.recipes = recipes_for(card)
        self.made = 0

    def _key(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except (OSError, ValueError):  # gone, or a name no file can have (a NUL in it)
            return None
        ident = [os.path.abspath(path), st.st_size, st.st_mtime_ns,
                 [r.params() for r in self.recipes]]
        return hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:20]

    def get(self, path: str) -> tuple[str | None, dict[str, str]]:
        """(the thumbnail's path relative to DIR, or None; the frame's header facts)."""
        key = self._key(path)
        if key is None:
            return None, {}
        png, meta = self.dir / f"{key}.png", self.dir / f"{key}.json"
        known = _entry(meta, png)
        if known is not None:
            return (f"{SEEN}/{png.name}" if known["image"] else None), known["facts"]
        made = self._make(path, png)  # new, or a damaged entry made again
        found = header_facts(path)
        self.dir.mkdir(exist_ok=True)
        write_atomic(meta, json.dumps({"path": path, "image": made, "facts": found}))
        return (f"{SEEN}/{png.name}" if made else None), found

    def _make(self, path: str, png: Path) -> bool:
        seen = preview(path, self.recipes)
        if seen is None:
            return False
        self.dir.mkdir(exist_ok=True)
        write_png(png, seen)
        self.made += 1
        return True


def _entry(meta: Path, png: Path) -> dict | None:
    """A cache entry as it was written (``image`` a bool whose PNG is there, ``facts`` text
    by text), or None when it is missing or of another shape: then it is made again."""
    try:
        with meta.open("rb") as fh:  # an entry is a few hundred bytes; more is not one
            known = json.loads(fh.read(1 << 16))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(known, dict) or not isinstance(known.get("image"), bool):
        return None
    facts = known.get("facts")
    if not isinstance(facts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in facts.items()):
        return None
    return known if not known["image"] or png.is_file() else None
