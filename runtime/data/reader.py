"""Reading frames: FITS (plain, gzip, bzip2, fpack) and JPEG/PNG, identified by their bytes.

A file's kind comes from its first bytes, not its name, so a mis-named file is read
as what it is and a file of the wrong kind is refused with a message naming both.

A FITS file is walked header by header before any pixel is read (:func:`check_fits_sizes`):
the walk alone decides which image is read and whether it is small enough, with bounded
work whatever the file's layout. astropy, where it is needed (scaling, BLANK, tile
compression), is handed only the image the walk checked, never the file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import math
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.util.text import library_message

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
MAX_HEADER_BLOCKS = 1000  # header blocks in a whole file: 36,000 cards are not a frame's
MAX_HDUS = 64  # HDUs walked to find the image; a file with more before it is refused

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


#: What :func:`read_frame` takes: a path, a file's bytes, or a frame already in memory.
Source = str | Path | bytes | Frame

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
    """Read a frame from a path or from the bytes of a file (a :class:`Frame` is returned).

    Raises
    ------
    FrameError
        The file is missing, unreadable, of an unknown kind, over the pixel limit, or
        holds no 2-D image.
    """
    if isinstance(source, Frame):
        return source
    limit = max_pixels()
    with (io.BytesIO(source) if isinstance(source, bytes) else open_regular(source)) as fh:
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
                return _read_fits(fh, limit)
            except OSError as exc:
                raise FrameError(f"cannot read: {exc.strerror or exc}") from None
        try:  # inflated as read, never beyond what the headers allow
            with (gzip.GzipFile(fileobj=fh) if packing == GZIP else bz2.BZ2File(fh)) as inner:
                return _read_fits(inner, limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise FrameError(f"damaged {packing} file ({library_message(exc)})") from None


def max_pixels() -> int:
    """``$FRAMEQC_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"${MAX_PIXELS_ENV} must be a whole number of pixels, not {value!r}")
    return int(value)


def open_regular(path: str | os.PathLike) -> IO[bytes]:
    """Open a regular file for reading; anything else (FIFO, device, socket, folder) is refused.

    The file is opened without blocking and checked on the open descriptor, so a FIFO
    cannot hang the reader and nothing can be swapped in between the check and the read.
    """
    try:
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
    except FrameError:
        os.close(fd)
        raise
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise FrameError(f"is {what}, not a regular file")


@dataclass(frozen=True)
class CheckedImage:
    """The image HDU a walk of the headers chose and checked (see :func:`check_fits_sizes`).

    ``header`` is its header as stored (whole blocks), ``cards`` that header parsed,
    ``primary`` the primary header's cards; ``shape`` is ``(NAXIS1, NAXIS2)`` of the image
    (ZNAXISn for a tile-compressed one); ``data_bytes`` is the size of the HDU's data
    as stored, which follow in the stream.
    """

    index: int
    cards: dict[str, str]
    primary: dict[str, str]
    header: bytes
    shape: tuple[int, int]
    data_bytes: int
    compressed: bool


def check_fits_sizes(fh: IO[bytes], limit: int) -> CheckedImage | None:
    """Walk the HDU headers up to the first 2-D image; refuse any file too large to read.

    Only headers are parsed: an image over ``limit`` pixels, any HDU whose data would
    take more than ``limit`` float64 pixels, or data before and of the image over that
    in all, is refused before a byte of it is read (or inflated). The work is bounded
    whatever the layout: at most MAX_HDUS headers of MAX_HEADER_BLOCKS blocks in all,
    and ``8 * limit`` bytes of data passed over. Data of HDUs before the image are
    skipped, never kept. A tile-compressed image is a BINTABLE extension with ZIMAGE = T
    (anywhere else ZIMAGE means nothing). Returns the image with ``fh`` at its data;
    None when the file ends without a 2-D image.
    """
    primary: dict[str, str] | None = None
    budget, blocks = 8 * limit, MAX_HEADER_BLOCKS
    for index in range(MAX_HDUS):
        found = _read_header(fh, blocks)
        if found is None:
            return None
        cards, header = found
        blocks -= -(-len(header) // FITS_BLOCK)
        if primary is None:
            if not header.startswith(b"SIMPLE  ="):
                raise FrameError("not a FITS, JPEG or PNG file")
            primary = cards
        naxis = [_int(cards, f"NAXIS{i}") for i in range(1, _int(cards, "NAXIS") + 1)]
        xtension = cards.get("XTENSION", "IMAGE").upper() if index else "IMAGE"
        compressed = xtension == "BINTABLE" and cards.get("ZIMAGE") == "T"
        if compressed:
            shape = [_int(cards, f"ZNAXIS{i}") for i in range(1, _int(cards, "ZNAXIS") + 1)]
        else:
            shape = naxis
        image = compressed or xtension == "IMAGE"
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
        if data > budget:
            raise FrameError(f"FITS data before the image and of it are over the limit of "
                             f"{8 * limit} bytes in all (${MAX_PIXELS_ENV})")
        budget -= data
        if image and len(shape) == 2 and pixels:
            return CheckedImage(index, cards, primary, header, (shape[0], shape[1]), data,
                                compressed)
        skip = -(-data // FITS_BLOCK) * FITS_BLOCK
        while skip:  # read, not seek: a gzip stream inflates what it skips either way
            chunk = fh.read(min(skip, 1 << 20))
            if not chunk:
                return None
            skip -= len(chunk)
    raise FrameError(f"FITS file has no 2-D image in its first {MAX_HDUS} HDUs; "
                     "not read further")


def _read_fits(fh: IO[bytes], limit: int) -> Frame:
    """The image the walk chose, read straight where numpy can, else by astropy."""
    image = check_fits_sizes(fh, limit)
    if image is None:
        raise FrameError("FITS file holds no 2-D image")
    raw = fh.read(image.data_bytes)
    if len(raw) < image.data_bytes:
        raise FrameError(f"damaged FITS file (data end after {len(raw)} of "
                         f"{image.data_bytes} bytes)")
    date = image.cards.get("DATE-OBS") or image.primary.get("DATE-OBS") or None
    data = _read_plain(raw, image)
    if data is not None:
        return Frame(FITS, data, date, image.header.decode("ascii", "replace"))
    data, header = _read_checked(raw, image)
    return Frame(FITS, data, date, header)


#: BITPIX -> the big-endian dtype of the data as stored.
_STORED = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _read_plain(raw: bytes, image: CheckedImage) -> np.ndarray | None:
    """The image read straight with numpy, where that gives what astropy gives.

    That is an uncompressed image stored as it is (no BSCALE/BZERO, no BLANK), or 16-bit
    data with BZERO = 32768 (how IO:O writes unsigned frames), which astropy returns as
    uint16. Anything else (other scaling, BLANK, compression) returns None and goes to
    astropy. Skipping astropy here keeps its 0.16 s import off a cold one-shot.
    """
    import numpy as np

    cards = image.cards
    bitpix = _int(cards, "BITPIX", signed=True)
    if image.compressed or bitpix not in _STORED or _int(cards, "NAXIS") != 2 \
            or "BLANK" in cards:  # astropy turns BLANK pixels into NaN (as floats)
        return None
    try:
        bscale, bzero = float(cards.get("BSCALE", "1")), float(cards.get("BZERO", "0"))
    except ValueError:
        return None
    unsigned16 = bitpix == 16 and bzero == 32768 and bscale == 1
    if not unsigned16 and (bscale != 1 or bzero != 0):
        return None
    w, h = image.shape
    data = np.frombuffer(raw, _STORED[bitpix], count=w * h).reshape(h, w)
    if unsigned16:
        return (data.view(">u2") ^ np.uint16(0x8000)).astype(np.uint16)
    return data.astype(data.dtype.newbyteorder("="))


def _read_header(fh: IO[bytes], max_blocks: int) -> tuple[dict[str, str], bytes] | None:
    """One FITS header: ``{keyword: value}`` (strings unquoted) and its bytes as stored.

    None at the end of the file; a header longer than ``max_blocks`` is refused.
    """
    cards: dict[str, str] = {}
    blocks = []
    for n in range(max_blocks):
        block = fh.read(FITS_BLOCK)
        if not block.strip(b"\0 "):
            return None if n == 0 else (cards, b"".join(blocks))
        blocks.append(block)
        for i in range(0, len(block), 80):
            card = block[i: i + 80].decode("ascii", "replace")
            key = card[:8].strip()
            if key == "END":
                return cards, b"".join(blocks)
            if card[8:10] == "= ":
                cards.setdefault(key, _value(card[10:]))
        if len(block) < FITS_BLOCK:
            return cards, b"".join(blocks)
    if max_blocks < MAX_HEADER_BLOCKS:
        raise FrameError(f"FITS headers of over {MAX_HEADER_BLOCKS} blocks in all; not read")
    raise FrameError("damaged FITS file (header has no END card)")


def _value(text: str) -> str:
    """A card's value: a string without its quotes (``''`` is a quote), else up to a ``/``."""
    text = text.strip()
    if not text.startswith("'"):
        return text.split("/")[0].strip()
    out, i = [], 1
    while i < len(text):
        if text[i] == "'":
            if text[i + 1: i + 2] != "'":
                break
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out).rstrip()


def _int(cards: dict[str, str], key: str, default: int | None = None,
         signed: bool = False) -> int:
    try:
        value = int(cards[key]) if key in cards or default is None else default
    except (KeyError, ValueError):
        raise FrameError(f"damaged FITS file (bad or missing {key} in a header)") from None
    if value < 0 and not signed:
        raise FrameError(f"damaged FITS file (negative {key})")
    return value


#: An empty primary header, put before an extension handed to astropy on its own.
_EMPTY_PRIMARY = b"".join(c.ljust(80).encode() for c in (
    "SIMPLE  =                    T", "BITPIX  =                    8",
    "NAXIS   =                    0", "EXTEND  =                    T", "END")).ljust(
    FITS_BLOCK, b" ")


def _read_checked(raw: bytes, image: CheckedImage) -> tuple[np.ndarray, str]:
    """The checked image read by astropy (scaling, BLANK, tile compression) and its header.

    astropy is handed that HDU alone (an extension behind an empty primary): it cannot
    read any other, nor read beyond the data the walk measured.
    """
    import numpy as np
    from astropy.io import fits

    header = image.header + b" " * (-len(image.header) % FITS_BLOCK)
    buf = (_EMPTY_PRIMARY if image.index else b"") + header + raw \
        + b"\0" * (-len(raw) % FITS_BLOCK)
    w, h = image.shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(buf), memmap=False, lazy_load_hdus=True) as hdul:
                hdu = hdul[1 if image.index else 0]
                if not hdu.is_image or tuple(hdu.shape) != (h, w):
                    raise FrameError("damaged FITS file (its image header reads two ways)")
                data = hdu.data
                if data is None:
                    raise FrameError("FITS file holds no 2-D image")
                return np.asarray(data), hdu.header.tostring()
    except FrameError:
        raise
    except Exception as exc:  # astropy raises many types for damaged files
        raise FrameError(f"damaged FITS file ({library_message(exc)})") from None


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
                         f"{library_message(exc)}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError,
            MemoryError) as exc:
        raise FrameError(f"damaged image file ({library_message(exc)})") from None
