"""FITS read by walking its headers: the one check of the pixel limit, and the readers of
the image it checked.

The walk (:func:`check_fits_sizes`) alone decides which image is read and whether it may
be, with bounded work whatever the file's layout. astropy, where it is needed (scaling,
BLANK, tile compression), is handed only the HDU the walk checked, never the file.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

from frameqc.runtime.errors import FrameError
from frameqc.runtime.util.text import library_message

if TYPE_CHECKING:
    import numpy as np

MAX_PIXELS_ENV = "FRAMEQC_MAX_PIXELS"
FITS_BLOCK = 2880
MAX_HEADER_BLOCKS = 1000  # header blocks in a whole file: 36,000 cards are not a frame's
MAX_HDUS = 64  # HDUs walked to find the image; a file with more before it is refused


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


def read_checked_fits(fh: IO[bytes], limit: int) -> tuple[np.ndarray, str | None, str]:
    """The image the walk chose, its DATE-OBS and its header as card text.

    Read straight with numpy where that gives what astropy gives, else by astropy.
    """
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
        return data, date, image.header.decode("ascii", "replace")
    data, header = _read_checked(raw, image)
    return data, date, header


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
