"""``frameqc bin``: write a median-binned copy of a FITS frame, as the upstream imbin.py did.

``FILE.fits`` -> ``FILE_binN.fits``. Integer data stay integer (the median truncated, as
the classifier's uint16 cast would), the header is kept with the binning recorded and the
WCS scaled, and an existing file is never replaced unless asked.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path

import numpy as np

from frameqc.runtime.data.binning import median_bin
from frameqc.runtime.data.reader import FITS, Frame, read_frame
from frameqc.runtime.errors import FrameError
from frameqc.runtime.util.text import library_message

_STEM = re.compile(r"(\.(fits|fit|fts))?(\.(gz|fz|bz2))?$", re.IGNORECASE)
_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "EXTEND", "PCOUNT", "GCOUNT", "BZERO",
               "BSCALE", "CHECKSUM", "DATASUM", "EXTNAME")


def binned_name(path: Path, factor: int) -> str:
    """``x.fits``, ``x.fits.gz``, ``x.fits.bz2`` or ``x.fits.fz`` -> ``x_binN.fits``."""
    return _STEM.sub("", path.name, count=1) + f"_bin{factor}.fits"


def _scaled_header(header, factor: int):
    """The input header without structural keywords, with the WCS scaled to the boxes."""
    hdr = header.copy()
    for key in list(hdr.keys()):
        if key in _STRUCTURAL or re.fullmatch(r"NAXIS\d*", key):
            del hdr[key]
    for axis in (1, 2):
        if f"CRPIX{axis}" in hdr:
            hdr[f"CRPIX{axis}"] = (hdr[f"CRPIX{axis}"] - 0.5) / factor + 0.5
        if f"CDELT{axis}" in hdr:
            hdr[f"CDELT{axis}"] = hdr[f"CDELT{axis}"] * factor
        for j in (1, 2):
            if f"CD{j}_{axis}" in hdr:
                hdr[f"CD{j}_{axis}"] = hdr[f"CD{j}_{axis}"] * factor
    hdr["FQCBIN"] = (factor, "frameqc median binning factor")
    hdr["HISTORY"] = f"frameqc bin: median-binned {factor}x{factor}, remainder trimmed"
    return hdr


def bin_file(path: str | os.PathLike, factor: int, outdir: str | os.PathLike | None = None,
             overwrite: bool = False) -> Path:
    """Write the binned copy of one FITS file and return its path.

    Raises
    ------
    FrameError
        Unreadable input, no 2-D image, or the output exists and ``overwrite`` is False.
    """
    src = Path(path)
    target = Path(outdir or src.parent) / binned_name(src, factor)
    if target.exists() and not overwrite:
        raise FrameError(f"{target} exists (use --overwrite to replace it)")
    frame = read_frame(src)  # the one reader, with its guards (size, kind, regular file)
    if frame.kind != FITS:
        raise FrameError(f"a {frame.kind.upper()} file: frameqc bin takes FITS frames")
    data = frame.data
    try:
        binned = median_bin(data, factor)
    except ValueError as exc:
        raise FrameError(str(exc)) from None
    if data.dtype.kind in "iu":
        binned = np.floor(binned).astype(data.dtype)
    else:
        binned = binned.astype(np.float32 if data.dtype.itemsize <= 4 else np.float64)
    _write(binned, _image_header(frame), factor, target)
    return target


def _image_header(frame: Frame):
    """The header of the image :func:`read_frame` read and checked, as astropy's Header."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fits.Header.fromstring(frame.header)
    except Exception as exc:  # astropy raises many types for damaged headers
        raise FrameError(f"damaged FITS header ({library_message(exc)})") from None


def _write(binned: np.ndarray, header, factor: int, target: Path) -> None:
    """Write under a temporary name, then rename: a failure leaves nothing behind."""
    from astropy.io import fits

    out = fits.PrimaryHDU(data=binned, header=_scaled_header(header, factor))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out.writeto(tmp, overwrite=True)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):  # its folder may be what failed
            tmp.unlink(missing_ok=True)
        raise FrameError(f"cannot write {target} ({exc.strerror or exc})") from None
