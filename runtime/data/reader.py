"""Reading frames: FITS (plain, gzip, bzip2, fpack) and JPEG/PNG, identified by their bytes.

A file's kind comes from its first bytes, not its name, so a mis-named file is read
as what it is and a file of the wrong kind is refused with a message naming both.

A FITS file is walked header by header before any pixel is read (:mod:`.fitswalk`): the
walk alone decides which image is read and whether it is small enough, with bounded work
whatever the file's layout.
"""

from __future__ import annotations

import bz2
import gzip
import io
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from frameqc.runtime.data.fitswalk import MAX_PIXELS_ENV, read_checked_fits
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.util.text import library_message

if TYPE_CHECKING:  # numpy is imported where frames are read, not to list them
    import numpy as np

FITS = "fits"
JPEG = "jpeg"
PNG = "png"

#: The largest image read, in pixels: refused from its header, before its data are read or
#: inflated. IO:O's full unbinned frame is 4096x4112 (17 Mpx); this is twice that.
DEFAULT_MAX_PIXELS = 1 << 25  # 33.5 Mpx
#: The largest JPEG/PNG a model of any input size runs at its own size: vgg16 at H x W
#: needs about 0.6 kB a pixel besides its weights (docs/performance.md: Sizes): 2.9 GB
#: in the server at 2048x2048.
IMAGE_PIXELS_ENV = "FRAMEQC_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class Frame:
    """A frame as read: ``kind`` is one of FITS, JPEG, PNG.

    ``data`` is the 2-D image (any numeric dtype, BZERO/BSCALE applied) for FITS,
    and an ``(H, W, 3)`` uint8 RGB array for JPEG and PNG. ``date_obs`` is the FITS
    header's DATE-OBS (the image HDU's, else the primary's), when there is one.
    ``header`` is the FITS image's header as card text (``frameqc bin`` copies it).
    """

    kind: str
    data: np.ndarray
    date_obs: str | None = None
    header: str = field(default="", repr=False, compare=False)

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


#: What :func:`read_frame` takes: a path, a file's bytes, a file opened by
#: :func:`open_regular`, or a frame already in memory.
Source = str | Path | bytes | Frame | IO[bytes]

GZIP, BZIP2 = "gzip", "bzip2"


def sniff(head: bytes) -> str | None:
    """Tell a frame's kind from its first bytes; None when it is none of ours.

    A gzip or bzip2 stream is FITS when what it inflates to starts as FITS. bzip2
    yields nothing until a whole block (up to 900 kB) is in, so a bzip2 head too short
    to tell is taken as FITS here, and refused when it is read if it is not.
    """
    if head.startswith(b"SIMPLE  ="):
        return FITS
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    packing = _packing(head)
    if packing is None:
        return None
    try:
        if packing == GZIP:
            inner = gzip.GzipFile(fileobj=io.BytesIO(head)).read(9)
        else:
            inner = bz2.BZ2Decompressor().decompress(head, 9)
    except (OSError, EOFError, zlib.error):
        return None
    return FITS if inner.startswith(b"SIMPLE  =") or (packing == BZIP2 and not inner) \
        else None


def _packing(head: bytes) -> str | None:
    """How a whole file is compressed, from its magic bytes; None when it is not."""
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return BZIP2
    return None


def read_frame(source: Source) -> Frame:
    """Read a frame from a path, a file's bytes, or a file from :func:`open_regular`
    (read and closed); a :class:`Frame` is returned as it is.

    Raises
    ------
    FrameError
        The file is missing, unreadable, of an unknown kind, over the pixel limit, or
        holds no 2-D image.
    """
    if isinstance(source, Frame):
        return source
    limit = max_pixels()
    if isinstance(source, bytes):
        opened: IO[bytes] = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        opened = open_regular(source)
    else:  # a file already opened by open_regular (checked where it was opened)
        opened = source
    with opened as fh:
        try:
            head = fh.read(4096)
            fh.seek(0)
        except OSError as exc:
            raise FrameError(f"cannot read: {exc.strerror or exc}") from None
        if not head:
            raise FrameError("empty file")
        kind = sniff(head)
        if kind is None:
            raise FrameError("not a FITS, JPEG or PNG file")
        if kind != FITS:
            return Frame(kind, _read_image(fh, limit))
        packing = _packing(head)
        if packing is None:
            try:
                return Frame(FITS, *read_checked_fits(fh, limit))
            except OSError as exc:
                raise FrameError(f"cannot read: {exc.strerror or exc}") from None
        try:  # inflated as read, never beyond what the headers allow
            with (gzip.GzipFile(fileobj=fh) if packing == GZIP else bz2.BZ2File(fh)) as inner:
                return Frame(FITS, *read_checked_fits(inner, limit))
        except (OSError, EOFError, zlib.error) as exc:
            raise FrameError(f"damaged {packing} file ({library_message(exc)})") from None


def max_pixels() -> int:
    """``$FRAMEQC_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    return _pixel_limit(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS)


def max_image_pixels() -> int:
    """``$FRAMEQC_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    return _pixel_limit(IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS)


def _pixel_limit(env: str, default: int) -> int:
    """A pixel limit from ``$env``: a whole number of at least 1, else one line, exit 2."""
    value = os.environ.get(env)
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${env} must be a whole number of pixels, not {value!r}")
    return int(value)


#: Why a file outside ``within`` (:func:`open_regular`) is refused.
OUTSIDE = "not under a folder this server may read (serve --allow)"


def open_regular(path: str | os.PathLike, within: tuple[str, ...] = ()) -> IO[bytes]:
    """Open a regular file for reading; anything else (FIFO, device, socket, folder) is refused.

    The file is opened without blocking and checked on the open descriptor, so a FIFO
    cannot hang the reader and nothing can be swapped in between the check and the read.
    With ``within`` (real paths of folders), the file must lie under one of them: checked
    on the path first (nothing outside is even opened), then on the descriptor's own path
    (``/proc/self/fd``), so a link swapped in between the two cannot lead elsewhere.
    """
    try:
        if within and not _under(os.path.realpath(path), within):
            raise FrameError(OUTSIDE)
        _regular(os.stat(path).st_mode)  # a socket cannot even be opened: name it first
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise FrameError("no such file") from None
    except OSError as exc:
        raise FrameError(f"cannot read: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte, or a lone surrogate the file system cannot name
        raise FrameError("not a valid file name (it holds a NUL byte or an unencodable "
                         "character)") from None
    try:
        _regular(os.fstat(fd).st_mode)
        if within and not _under(_opened_path(fd), within):
            raise FrameError(OUTSIDE)
    except FrameError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _opened_path(fd: int) -> str:
    """The real path of what ``fd`` has open, as the kernel resolved it."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: nothing can be vouched for
        return ""


def _under(real: str, folders: tuple[str, ...]) -> bool:
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in folders)


def _regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise FrameError(f"is {what}, not a regular file")


def _read_image(src: IO[bytes], limit: int) -> np.ndarray:
    """A JPEG or PNG as RGB; its size is checked from its header before it is decoded.

    PIL's own bomb limit (a process-wide setting) is left as it is: setting it to ours would
    change every other image this process opens (a report's plots, a page's screenshots).
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as img:
                w, h = img.size
                if w * h > limit:
                    raise FrameError(f"image of {w}x{h} pixels is over the limit of {limit} "
                                     f"(${MAX_PIXELS_ENV})")
                return np.asarray(img.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FrameError(f"image over the limit of {limit} pixels (${MAX_PIXELS_ENV}): "
                         f"{library_message(exc)}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
            MemoryError) as exc:
        raise FrameError(f"damaged image file ({library_message(exc)})") from None
