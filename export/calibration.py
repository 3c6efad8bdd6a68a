"""Frames for validation and calibration, prepared by the runtime's own recipe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from frameqc.runtime.data.reader import FITS, PNG, Frame
from frameqc.runtime.data.sources import list_frames
from frameqc.runtime.data.synthetic import KINDS, make_frame
from frameqc.runtime.engine.pipeline import prepare
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.model.recipes import AsinhRecipe, Recipe

#: Synthetic frames are made at 681 px (binned 3x3 to 227, like a binned IO:O frame).
SYNTHETIC_SIZE = 681


def synthetic_tensors(recipe: Recipe, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` prepared synthetic frames, the three kinds in turn."""
    out = []
    for i in range(n):
        data = make_frame(KINDS[i % len(KINDS)], SYNTHETIC_SIZE, seed + i)
        if FITS in recipe.kinds:
            out.append(recipe.prepare(Frame(FITS, data)).tensor)
        else:  # an rgb recipe: the grey asinh preparation as an RGB image
            plane = AsinhRecipe(size=recipe.size).prepare(Frame(FITS, data)).tensor[0]
            rgb = np.repeat(np.rint(plane * 255).astype(np.uint8)[:, :, None], 3, axis=2)
            out.append(recipe.prepare(Frame(PNG, rgb)).tensor)
    return out


def directory_tensors(recipe: Recipe, directory: str | Path) -> list[np.ndarray]:
    """Every frame of ``directory`` the recipe can prepare; the others are named and skipped."""
    path = Path(directory)
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory of frames")
    out = []
    for f in list_frames(path):
        try:
            out.append(prepare(f, recipe).tensor)
        except FrameError as exc:
            print(f"frameqc export: skipping {f}: {exc}", file=sys.stderr)
    if not out:
        raise UsageError(f"{path}: no frame there that the '{recipe.name}' recipe can prepare")
    return out
