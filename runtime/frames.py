"""Reading frames: FITS (plain, gzip, fpack) and JPEG/PNG, identified by their bytes.

A file's kind comes from its first bytes, not its name, so a mis-named file is read
as what it is and a file of the wrong kind is refused with a message naming both.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

from .errors import FrameError

if TYPE_CHECKING:  # numpy is imported where frames are read, not to list them
    import numpy as np

FITS = "fits"
JPEG = "jpeg"
PNG = "png"

#: Names a directory listing picks up; single files are judged by their bytes.
FRAME_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz", ".fits.fz",
                  ".fz", ".jpg", ".jpeg", ".png")



@dataclass(frozen=True)
class Frame:
    """A frame as read: ``kind`` is one of FITS, JPEG, PNG.

    ``data`` is the 2-D image (any numeric dtype, BZERO/BSCALE applied) for FITS,
    and an ``(H, W, 3)`` uint8 RGB array for JPEG and PNG.
    """

    kind: str
    data: np.ndarray

    @classmethod
    def from_array(cls, data: np.ndarray) -> Frame:
        """A frame already in memory: 2-D as FITS pixel data, ``(H, W, 3)`` uint8 as RGB."""
        import numpy as np

        data = np.asarray(data)
        if data.ndim == 2 and data.dtype.kind in "uif":
            return cls(FITS, data)
        if data.ndim == 3 and data.shape[2] == 3 and data.dtype == np.uint8:
            return cls(PNG, data)
        raise FrameError(f"an array of shape {data.shape} and dtype {data.dtype} is neither "
                         "a 2-D image nor an (H, W, 3) uint8 RGB image")


#: What :func:`read_frame` takes: a path, a file's bytes, or a frame already in memory.
Source = Union[str, Path, bytes, Frame]


def sniff(head: bytes) -> str | None:
    """Tell a frame's kind from its first bytes; None when it is none of ours."""
    if head.startswith(b"SIMPLE  ="):
        return FITS
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = gzip.GzipFile(fileobj=io.BytesIO(head)).read(9)
        except (OSError, EOFError):
            return None
        return FITS if inner.startswith(b"SIMPLE  =") else None
    return None


def read_frame(source: Source) -> Frame:
    """Read a frame from a path or from the bytes of a file (a :class:`Frame` is returned).

    Raises
    ------
    FrameError
        The file is missing, unreadable, of an unknown kind, or holds no 2-D image.
    """
    if isinstance(source, Frame):
        return source
    if isinstance(source, bytes):
        head, opener = source[:4096], (lambda: io.BytesIO(source))
    else:
        path = Path(source)
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096)
        except FileNotFoundError:
            raise FrameError("no such file") from None
        except IsADirectoryError:
            raise FrameError("is a directory") from None
        except OSError as exc:
            raise FrameError(f"cannot read: {exc.strerror or exc}") from None
        opener = lambda: path  # noqa: E731
    if not head:
        raise FrameError("empty file")
    kind = sniff(head)
    if kind is None:
        raise FrameError("not a FITS, JPEG or PNG file")
    if kind == FITS:
        return Frame(FITS, _read_fits(opener()))
    return Frame(kind, _read_image(opener()))


def _read_fits(src: Path | io.BytesIO) -> np.ndarray:
    """The first HDU holding a 2-D image (compressed ones included), scaled."""
    import numpy as np
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(src, memmap=False, lazy_load_hdus=True) as hdul:
                for hdu in hdul:
                    if hdu.is_image and hdu.header.get("NAXIS") == 2:
                        data = hdu.data
                        if data is not None:
                            return np.asarray(data)
    except FrameError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise FrameError(f"damaged FITS file ({_one_line(exc)})") from None
    raise FrameError("FITS file holds no 2-D image")


def _read_image(src: Path | io.BytesIO) -> np.ndarray:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise FrameError(f"damaged image file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def list_frames(path: Path) -> list[Path]:
    """The frames of a directory, sorted by name (not recursive)."""
    return sorted(p for p in path.iterdir()
                  if p.is_file() and p.name.lower().endswith(FRAME_SUFFIXES))
