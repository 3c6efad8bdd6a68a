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


#: Pixels calibrated in one pass: onnxruntime's calibrator holds every activation of a
#: pass at once (about 60 MB a 224x224 frame), so a pass is 32 frames of 224 px (all of
#: them, as without sizes) or fewer larger ones, down to one large frame at a time.
CALIBRATION_PIXELS = 32 * 224 * 224


def chunked_reader(name: str, frames: list[np.ndarray]):
    """The calibration frames for onnxruntime's strided calibration, one pass a chunk.

    A pass stacks what it collects, so frames of different sizes cannot share one; with
    ``CalibStridedMinMax`` 1 the calibrator asks for the range ``k..k+1`` and gets chunk k
    (consecutive frames of one size, at most CALIBRATION_PIXELS), merging the passes.
    """
    from frameqc.runtime.model import import_onnxruntime

    import_onnxruntime()  # before its quantization package: telemetry off
    from onnxruntime.quantization import CalibrationDataReader

    chunks: list[list[np.ndarray]] = []
    for f in frames:
        last = chunks[-1] if chunks else None
        if last is None or f.shape != last[0].shape \
                or (len(last) + 1) * f.shape[-1] * f.shape[-2] > CALIBRATION_PIXELS:
            chunks.append([f])
        else:
            last.append(f)

    class Chunks(CalibrationDataReader):
        def __len__(self) -> int:
            return len(chunks)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._it = iter([f for c in chunks[start_index:end_index] for f in c])

        def get_next(self) -> dict | None:
            f = next(self._it, None)
            return None if f is None else {name: np.ascontiguousarray(f[None], np.float32)}

    reader = Chunks()
    reader.set_range(0, len(chunks))
    return reader


def size_names(tensors: list[np.ndarray]) -> list[str]:
    """The distinct ``WxH`` sizes of prepared tensors, in order of first sight."""
    return list(dict.fromkeys(f"{t.shape[-1]}x{t.shape[-2]}" for t in tensors))


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
