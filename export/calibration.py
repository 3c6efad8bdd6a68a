"""Frames for validation and calibration, prepared by the runtime's own recipe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from frameqc.runtime.data.sources import list_frames
from frameqc.runtime.engine.pipeline import prepare
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.model.recipes import Recipe


def synthetic_tensors(recipe: Recipe, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` of the recipe's own synthetic frames, prepared."""
    return [recipe.prepare(recipe.synthetic(i, seed)).tensor for i in range(n)]


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
