"""Median binning of frames in square boxes, as the upstream ``imbin.py -b N`` did.

The classifier was trained on 2x2-binned IO:O frames median-binned 9x9 (about 227 px
square). What does not fill a whole box is trimmed from the end of each axis, as in
astropy's ``block_reduce``; each box is the median of its finite pixels.
"""

from __future__ import annotations

import warnings

import numpy as np


def auto_factor(shape: tuple[int, ...], size: int = 224) -> int:
    """The box size that brings a frame closest to ``size`` without going under it.

    ``max(1, min(h, w) // size)``: a 2048 px frame gets 9 (as in training),
    a frame already binned to 227 px gets 1.
    """
    return max(1, min(shape[0], shape[1]) // size)


def median_bin(data: np.ndarray, factor: int) -> np.ndarray:
    """Median-bin a 2-D array in ``factor x factor`` boxes.

    Parameters
    ----------
    data : ndarray
        2-D image, any numeric dtype.
    factor : int
        Box size; 1 returns the data unchanged.

    Returns
    -------
    ndarray
        ``(h // factor, w // factor)``, float64 (float32 input stays float32).
        A box with no finite pixel is NaN.
    """
    if factor < 1:
        raise ValueError("binning factor must be at least 1")
    if factor == 1:
        return data
    ny, nx = data.shape[0] // factor, data.shape[1] // factor
    if ny == 0 or nx == 0:
        raise ValueError(f"a {data.shape[1]}x{data.shape[0]} frame is smaller than one "
                         f"{factor}x{factor} box")
    boxes = (data[: ny * factor, : nx * factor]
             .reshape(ny, factor, nx, factor)
             .swapaxes(1, 2)
             .reshape(ny, nx, factor * factor))
    if data.dtype.kind == "f":
        finite = np.isfinite(boxes)
        if not finite.all():
            boxes = np.where(finite, boxes, np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmedian(boxes, axis=-1)
    return np.median(boxes, axis=-1)
