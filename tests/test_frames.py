import gzip
import io
import warnings

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from frameqc.runtime.data.reader import FITS, JPEG, PNG, read_frame, sniff
from frameqc.runtime.data.sources import list_frames
from frameqc.runtime.errors import FrameError


def test_sniff_by_bytes():
    assert sniff(b"SIMPLE  =                    T") == FITS
    assert sniff(b"\x89PNG\r\n\x1a\nrest") == PNG
    assert sniff(b"\xff\xd8\xff\xe0") == JPEG
    assert sniff(gzip.compress(b"SIMPLE  = T" + b" " * 100)) == FITS
    assert sniff(gzip.compress(b"hello")) is None
    assert sniff(b"hello") is None


def test_kind_comes_from_bytes_not_name(tmp_path):
    data = np.arange(12, dtype=np.uint16).reshape(3, 4)
    fits.PrimaryHDU(data).writeto(tmp_path / "looks_like.png")
    frame = read_frame(tmp_path / "looks_like.png")
    assert frame.kind == FITS
    np.testing.assert_array_equal(frame.data, data)
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "x.fits", format="PNG")
    frame = read_frame(tmp_path / "x.fits")
    assert frame.kind == PNG and frame.data.shape == (5, 6, 3)


def test_reads_bytes_and_scaling(tmp_path):
    hdu = fits.PrimaryHDU(np.array([[0, 1], [2, 3]], np.int16))
    hdu.header["BSCALE"], hdu.header["BZERO"] = 2.0, 10.0
    hdu.writeto(tmp_path / "s.fits")
    raw = (tmp_path / "s.fits").read_bytes()
    np.testing.assert_array_equal(read_frame(raw).data, [[10, 12], [14, 16]])


def test_first_2d_image_hdu(tmp_path):
    img = np.ones((4, 5), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones(3)), fits.ImageHDU(img)]).writeto(
        tmp_path / "m.fits")
    assert read_frame(tmp_path / "m.fits").data.shape == (4, 5)


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"), (b"hello world", "not a FITS, JPEG or PNG file"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "damaged image file"),
    (b"SIMPLE  =                    T" + b" " * 50, "damaged FITS file"),
])
def test_refusals_are_one_line(tmp_path, content, message):
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(FrameError, match=message) as info:
        read_frame(tmp_path / "f")
    assert "\n" not in str(info.value)


def test_missing_and_directory(tmp_path):
    with pytest.raises(FrameError, match="no such file"):
        read_frame(tmp_path / "nope.fits")
    with pytest.raises(FrameError, match="is a directory"):
        read_frame(tmp_path)


def test_list_frames_sorted_and_filtered(tmp_path):
    for name in ("b.fits", "a.fits.fz", "c.jpg", "notes.txt", "d.fits.gz"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.fits").mkdir()
    assert [p.name for p in list_frames(tmp_path)] == ["a.fits.fz", "b.fits", "c.jpg",
                                                       "d.fits.gz"]


def _fits_bytes(data, **header) -> bytes:
    hdu = fits.PrimaryHDU(data)
    for k, v in header.items():
        hdu.header[k] = v
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


_RNG = np.random.default_rng(0)
_FORMS = {
    "uint16 BZERO": (_RNG.integers(0, 65535, (30, 20), dtype=np.uint16), {}),
    "int16": (_RNG.integers(-30000, 30000, (30, 20), dtype=np.int16), {}),
    "uint8": (_RNG.integers(0, 255, (30, 20), dtype=np.uint8), {}),
    "int32": (_RNG.integers(-2**31, 2**31 - 1, (30, 20), dtype=np.int32), {}),
    "int64": (_RNG.integers(-2**40, 2**40, (30, 20), dtype=np.int64), {}),
    "float32": (_RNG.normal(0, 1e4, (30, 20)).astype(np.float32), {}),
    "float64 NaN": (np.where(_RNG.random((30, 20)) < 0.1, np.nan, 1.5), {}),
    "int16 BLANK": (np.array([[-32768, 5], [7, 9]], np.int16), {"BLANK": -32768}),
    "int32 BLANK": (np.array([[-1, 5], [7, 9]], np.int32), {"BLANK": -1}),
    "uint16 BLANK": (np.array([[0, 5], [7, 65535]], np.uint16), {"BLANK": 32767}),
    "int16 scaled": (np.array([[1, 5], [7, 9]], np.int16), {"BSCALE": 2.5, "BZERO": 10.0}),
    "DATE-OBS": (np.ones((4, 4), np.uint16), {"DATE-OBS": "2025-07-09T02:15:00.000"}),
}


@pytest.mark.parametrize("form", list(_FORMS))
def test_frames_read_as_astropy_reads_them(form):
    """Plain frames are read with numpy, the rest with astropy: the same either way."""
    data, header = _FORMS[form]
    raw = _fits_bytes(data, **header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = fits.getdata(io.BytesIO(raw))
    frame = read_frame(raw)
    assert (frame.data.dtype.kind, frame.data.dtype.itemsize) == (ref.dtype.kind,
                                                                  ref.dtype.itemsize)
    np.testing.assert_array_equal(frame.data, ref)
    assert frame.date_obs == header.get("DATE-OBS")
