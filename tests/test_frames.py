import gzip

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from frameqc.runtime.errors import FrameError
from frameqc.runtime.frames import FITS, JPEG, PNG, list_frames, read_frame, sniff


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
