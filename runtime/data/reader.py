"""Reading frames: FITS (plain, gzip, fpack) and JPEG/PNG, identified by their bytes.

A file's kind comes from its first bytes, not its name, so a mis-named file is read
as what it is and a file of the wrong kind is refused with a message naming both.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import stat
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.util.text import first_line

if TYPE_CHECKING:  # numpy is imported where frames are read, not to list them
    import numpy as np

FITS = "fits"
JPEG = "jpeg"
PNG = "png"

#: The largest image read, in pixels: refused from its header, before its data are read or
#: inflated. IO:O's full unbinned frame is 4096x4112 (17 Mpx); this is twice that.
MAX_PIXELS_ENV = "FRAMEQC_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 1 << 25  # 33.5 Mpx

FITS_BLOCK = 2880
MAX_HEADER_BLOCKS = 1000  # a header of over 36,000 cards is not a frame's
MAX_HDUS = 64

@dataclass(frozen=True)
class Frame:
    """A frame as read: ``kind`` is one of FITS, JPEG, PNG.

    ``data`` is the 2-D image (any numeric dtype, BZERO/BSCALE applied) for FITS,
    and an ``(H, W, 3)`` uint8 RGB array for JPEG and PNG. ``date_obs`` is the FITS
    header's DATE-OBS (the image HDU's, else the primary's), when there is one.
    """

    kind: str
    data: np.ndarray
    date_obs: str | None = None

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
        except (OSError, EOFError, zlib.error):
            return None
        return FITS if inner.startswith(b"SIMPLE  =") else None
    return None


def read_frame(source: Source) -> Frame:
    """Read a frame from a path, a file's bytes, or a file from :func:`open_regular`
    (read and closed); a :class:`Frame` is returned as it is.

    Raises
    ------
    FrameError
        The file is missing, unreadable, of an unknown kind, or holds no 2-D image.
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
        if head.startswith(b"\x1f\x8b"):  # inflated as read, never beyond what headers allow
            try:
                with gzip.GzipFile(fileobj=fh) as inner:
                    found = check_fits_sizes(inner, limit)
                    plain = _read_plain(inner, *found) if found else None
            except (OSError, EOFError, zlib.error) as exc:
                raise FrameError(f"damaged gzip file ({first_line(exc)})") from None
            if plain is not None:
                return Frame(FITS, *plain)
            fh.seek(0)
            with gzip.GzipFile(fileobj=fh) as inner:
                return Frame(FITS, *_read_fits(inner))
        try:
            found = check_fits_sizes(fh, limit)
            plain = _read_plain(fh, *found) if found else None
            fh.seek(0)
        except OSError as exc:
            raise FrameError(f"cannot read: {exc.strerror or exc}") from None
        return Frame(FITS, *plain) if plain is not None else Frame(FITS, *_read_fits(fh))


def max_pixels() -> int:
    """``$FRAMEQC_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${MAX_PIXELS_ENV} must be a whole number of pixels, not {value!r}")
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


def check_fits_sizes(fh: IO[bytes], limit: int) -> tuple[dict, dict] | None:
    """Walk the HDU headers up to the first 2-D image; refuse any HDU too large to read.

    Only headers are parsed: an image over ``limit`` pixels, or any HDU whose data would
    take more than ``limit`` float64 pixels, is refused before a byte of its data is read
    (or inflated, for gzip). Data of HDUs before the image are skipped, never kept.
    Returns the image's header cards and the primary's, with ``fh`` at the image's data;
    None when there is no 2-D image.
    """
    primary = None
    for _ in range(MAX_HDUS):
        cards = _read_header(fh)
        if cards is None:
            return None
        primary = primary if primary is not None else cards
        naxis = [_int(cards, f"NAXIS{i}") for i in range(1, _int(cards, "NAXIS") + 1)]
        compressed = cards.get("ZIMAGE") == "T"
        if compressed:
            shape = [_int(cards, f"ZNAXIS{i}") for i in range(1, _int(cards, "ZNAXIS") + 1)]
        else:
            shape = naxis
        image = compressed or cards.get("XTENSION", "'IMAGE'").strip("' ") == "IMAGE"
        pixels = math.prod(shape) if shape else 0
        if image and pixels > limit:
            size = "x".join(map(str, shape))
            raise FrameError(f"image of {size} pixels is over the limit of {limit} "
                             f"(${MAX_PIXELS_ENV})")
        data = abs(_int(cards, "BITPIX", signed=True)) // 8 * _int(cards, "GCOUNT", 1) * (
            _int(cards, "PCOUNT", 0) + (math.prod(naxis) if naxis else 0))
        if data > 8 * limit:
            raise FrameError(f"HDU of {data} bytes is over the limit of {8 * limit} bytes "
                             f"(${MAX_PIXELS_ENV})")
        if image and len(shape) == 2 and pixels:
            return cards, primary
        skip = -(-data // FITS_BLOCK) * FITS_BLOCK
        while skip:  # read, not seek: a gzip stream inflates what it skips either way
            chunk = fh.read(min(skip, 1 << 20))
            if not chunk:
                return None
            skip -= len(chunk)
    return None


#: BITPIX -> the big-endian dtype of the data as stored.
_STORED = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _read_plain(fh: IO[bytes], cards: dict, primary: dict) -> tuple[np.ndarray, str | None] | None:
    """The image read straight with numpy, where that gives what astropy gives.

    That is an uncompressed image stored as it is (no BSCALE/BZERO, no BLANK), or 16-bit
    data with BZERO = 32768 (how IO:O writes unsigned frames), which astropy returns as
    uint16. Anything else (other scaling, BLANK, compression) returns None and goes to
    astropy. Skipping astropy here keeps its 0.16 s import off a cold one-shot.
    """
    import numpy as np

    bitpix = _int(cards, "BITPIX", signed=True)
    if cards.get("ZIMAGE") == "T" or bitpix not in _STORED or _int(cards, "NAXIS") != 2 \
            or "BLANK" in cards:  # astropy turns BLANK pixels into NaN (as floats)
        return None
    try:
        bscale, bzero = float(cards.get("BSCALE", "1")), float(cards.get("BZERO", "0"))
    except ValueError:
        return None
    unsigned16 = bitpix == 16 and bzero == 32768 and bscale == 1
    if not unsigned16 and (bscale != 1 or bzero != 0):
        return None
    w, h = _int(cards, "NAXIS1"), _int(cards, "NAXIS2")
    size = w * h * abs(bitpix) // 8
    raw = fh.read(size)
    if len(raw) < size:
        raise FrameError(f"damaged FITS file (data end after {len(raw)} of {size} bytes)")
    data = np.frombuffer(raw, _STORED[bitpix]).reshape(h, w)
    if unsigned16:
        data = (data.view(">u2") ^ np.uint16(0x8000)).astype(np.uint16)
    else:
        data = data.astype(data.dtype.newbyteorder("="))
    date = cards.get("DATE-OBS") or primary.get("DATE-OBS")
    return data, date.strip("' ") if date else None


def _read_header(fh: IO[bytes]) -> dict[str, str] | None:
    """One FITS header as ``{keyword: raw value}``; None at the end of the file."""
    cards: dict[str, str] = {}
    for n in range(MAX_HEADER_BLOCKS):
        block = fh.read(FITS_BLOCK)
        if not block.strip(b"\0 "):
            return None if n == 0 else cards
        for i in range(0, len(block), 80):
            card = block[i: i + 80].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards
            if card[8:10] == "= ":
                cards.setdefault(key, card[10:].split("/")[0].strip())
        if len(block) < FITS_BLOCK:
            return cards
    raise FrameError("damaged FITS file (header has no END card)")


def _int(cards: dict[str, str], key: str, default: int | None = None,
         signed: bool = False) -> int:
    try:
        value = int(cards[key]) if key in cards or default is None else default
    except (KeyError, ValueError):
        raise FrameError(f"damaged FITS file (bad or missing {key} in a header)") from None
    if value < 0 and not signed:
        raise FrameError(f"damaged FITS file (negative {key})")
    return value


def _read_fits(src: IO[bytes]) -> tuple[np.ndarray, str | None]:
    """The first HDU holding a 2-D image (compressed ones included), scaled; DATE-OBS."""
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
                            date = hdu.header.get("DATE-OBS", hdul[0].header.get("DATE-OBS"))
                            return np.asarray(data), str(date) if date else None
    except FrameError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise FrameError(f"damaged FITS file ({first_line(exc)})") from None
    raise FrameError("FITS file holds no 2-D image")


def _read_image(src: IO[bytes], limit: int) -> np.ndarray:
    """A JPEG or PNG as RGB; its size is checked from its header before it is decoded."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = limit
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
                         f"{first_line(exc)}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
            MemoryError) as exc:
        raise FrameError(f"damaged image file ({first_line(exc)})") from None
