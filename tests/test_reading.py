"""Issue 17, reading frames: the pixel limit holds whatever the file's layout, bzip2 is read
with gzip's guards, and every odd input (a NUL in a path, an unreadable folder, a failing
write) is one line about that input while the rest of the run goes on."""

import bz2
import gzip
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from frameqc.runtime.data.fitswalk import MAX_HDUS
from frameqc.runtime.data.reader import FITS, read_frame, sniff
from frameqc.runtime.data.synthetic import make_frame, write_fits
from frameqc.runtime.errors import FrameError
from frameqc.runtime.util.text import library_message

from helpers import frameqc, one_line, png_bomb, run_cli

NOBODY = 65534
SMALL = 1_000_000  # $FRAMEQC_MAX_PIXELS in the layout tests: 8 MB of data in all


def header(*cards: tuple) -> bytes:
    """A header's bytes (whole blocks) from (keyword, value) pairs, in that order."""
    return fits.Header(list(cards)).tostring().encode()


def primary(naxis: tuple[int, ...] = (), bitpix: int = 8, *extra: tuple) -> bytes:
    return header(("SIMPLE", True), ("BITPIX", bitpix), ("NAXIS", len(naxis)),
                  *[(f"NAXIS{i}", n) for i, n in enumerate(naxis, 1)], ("EXTEND", True),
                  *extra)


def extension(naxis: tuple[int, ...] = (), bitpix: int = 8, kind: str = "IMAGE",
              *extra: tuple) -> bytes:
    return header(("XTENSION", kind), ("BITPIX", bitpix), ("NAXIS", len(naxis)),
                  *[(f"NAXIS{i}", n) for i, n in enumerate(naxis, 1)], ("PCOUNT", 0),
                  ("GCOUNT", 1), *extra)


def data(nbytes: int) -> bytes:
    return b"\0" * (nbytes + (-nbytes % 2880))


def pack(raw: bytes, packing: str) -> bytes:
    return {"plain": raw, "gzip": gzip.compress(raw, 1), "bzip2": bz2.compress(raw, 1)}[packing]


@pytest.fixture()
def small_limit(monkeypatch):
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", str(SMALL))


LAYOUTS = {
    # 64 empty extensions, then an image over the limit: past the old walk's reach,
    # astropy read it unchecked
    "image after 64 HDUs": (
        primary() + extension() * MAX_HDUS + extension((1100, 1100)) + data(1100 * 1100),
        f"no 2-D image in its first {MAX_HDUS} HDUs"),
    # the same image just within reach: refused from its header, as always
    "image after 62 HDUs": (
        primary() + extension() * 62 + extension((1100, 1100)) + data(1100 * 1100),
        "image of 1100x1100 pixels is over the limit of 1000000"),
    # ZIMAGE in a primary header means nothing: the image is NAXISn's, not ZNAXISn's
    "ZIMAGE in the primary": (
        primary((1100, 1100), 8, ("ZIMAGE", True), ("ZNAXIS", 2), ("ZNAXIS1", 10),
                ("ZNAXIS2", 10)) + data(1100 * 1100),
        "image of 1100x1100 pixels is over the limit of 1000000"),
    # tables each under the limit, over it in all, before a small image
    "9 MB of tables first": (
        primary() + (extension((1000, 1000), 8, "BINTABLE", ("TFIELDS", 1),
                               ("TFORM1", "1000B")) + data(1000 * 1000)) * 9
        + extension((100, 100)) + data(100 * 100),
        "over the limit of 8000000 bytes in all"),
    # headers each under MAX_HEADER_BLOCKS, over it in all
    "1200 header blocks": (
        primary() + (extension((), 8, "IMAGE", *[("COMMENT", "x" * 60)] * 1100)) * 40
        + extension((100, 100)) + data(100 * 100),
        "FITS headers of over 1000 blocks in all"),
}


@pytest.mark.parametrize("packing", ["plain", "gzip", "bzip2"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_pixel_limit_holds_whatever_the_layout(small_limit, layout, packing):
    raw, message = LAYOUTS[layout]
    with pytest.raises(FrameError, match=message):
        read_frame(pack(raw, packing))


def test_a_checked_image_behind_other_hdus_is_the_one_read(small_limit):
    """astropy reads the HDU the walk chose (scaled, after a table), nothing else."""
    img = (np.arange(200 * 300) % 5000).reshape(200, 300).astype(np.float64) * 2.0 + 1.0
    scaled = fits.ImageHDU(img.copy(), header=fits.Header([("DATE-OBS", "2025-07-08T23:10:04")]))
    scaled.scale("int16", bscale=2.0, bzero=1.0)
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "J", array=np.arange(5))]), scaled,
        fits.ImageHDU(np.ones((50, 50), np.float32))])
    buf = io.BytesIO()
    hdus.writeto(buf)
    frame = read_frame(buf.getvalue())
    assert frame.data.shape == (200, 300) and frame.date_obs == "2025-07-08T23:10:04"
    assert frame.header.startswith("XTENSION= 'IMAGE   '") and "DATE-OBS" in frame.header
    np.testing.assert_array_equal(frame.data, img)


def fits_bytes(data: np.ndarray) -> bytes:
    buf = io.BytesIO()
    fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


def test_bzip2_frames_read_as_the_plain_ones(tmp_path):
    frame = make_frame("good", 300, 1)
    write_fits(tmp_path / "a.fits", frame)
    plain = (tmp_path / "a.fits").read_bytes()
    (tmp_path / "a.fits.bz2").write_bytes(bz2.compress(plain))
    scaled = fits_bytes(frame.astype(np.float32) * 1.5)
    (tmp_path / "b.fts.bz2").write_bytes(bz2.compress(scaled))
    assert sniff(bz2.compress(plain)) == FITS
    np.testing.assert_array_equal(read_frame(tmp_path / "a.fits.bz2").data,
                                  read_frame(tmp_path / "a.fits").data)
    np.testing.assert_array_equal(read_frame(tmp_path / "b.fts.bz2").data,
                                  read_frame(scaled).data)


def bzip2_bomb(side: int = 16384) -> bytes:
    """A ~100 kB .fits.bz2 whose header claims a side x side float64 image (2 GiB inflated).

    bzip2 streams may follow one another; one stream of 1 MiB of zeros, repeated, is the
    image's data, so the bomb is made in a moment.
    """
    zeros = bz2.compress(b"\0" * (1 << 20), 9)
    return bz2.compress(primary((side, side), -64)) + zeros * (side * side * 8 >> 20)


def test_bzip2_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "bomb.fits.bz2").write_bytes(bzip2_bomb())
    t = time.monotonic()
    with pytest.raises(FrameError, match="image of 16384x16384 pixels is over the limit"):
        read_frame(tmp_path / "bomb.fits.bz2")
    assert time.monotonic() - t < 5


@pytest.mark.parametrize("content, message", [
    (bz2.compress(b"hello, not a frame" * 100), "not a FITS, JPEG or PNG file"),
    (bz2.compress(fits_bytes(np.ones((64, 64), np.float32)))[:-40],
     "damaged bzip2 file (Compressed file ended before the end-of-stream marker was reached)"),
])
def test_bzip2_that_is_not_a_frame_is_one_line(content, message):
    with pytest.raises(FrameError) as info:
        read_frame(content)
    assert str(info.value) == message


def test_gzip_bomb_behind_64_empty_hdus_stays_small(runtime_model, tmp_path):
    """The issue's file: 64 empty extensions, then a 16384^2 float64 image, 2 GiB inflated."""
    zeros = gzip.compress(b"\0" * (1 << 24), 9)  # gzip members may follow one another
    (tmp_path / "bomb.fits.gz").write_bytes(gzip.compress(
        primary() + extension() * 64 + extension((16384, 16384), -64))
        + zeros * (16384 * 16384 * 8 >> 24))
    code = ("import resource, subprocess, sys; "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
            "sys.stderr.write(p.stderr); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m",
                           "frameqc.runtime.cli", "classify", "--model",
                           str(runtime_model["int8"]), str(tmp_path / "bomb.fits.gz")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FRAMEQC_SOCKET": str(tmp_path / "none.sock")})
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"no 2-D image in its first {MAX_HDUS} HDUs" in proc.stderr
    assert int(proc.stdout) < 600, f"peak {proc.stdout.strip()} MB: the bomb was inflated"


# -- paths that are not paths ------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(runtime_model):
    from frameqc.runtime.engine.pipeline import Classifier

    return Classifier.load(runtime_model["fp32"])


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reading")
    for i in range(3):
        write_fits(d / f"f{i}.fits", make_frame("good", 300, i))
    odd = os.fsencode(str(d)) + b"/caf\xe9.fits"  # a real name that is not UTF-8
    shutil.copy(d / "f0.fits", odd)
    return d


def test_nul_in_a_path_is_that_frame_s_error_and_the_batch_goes_on(classifier, frames):
    paths = [str(frames / "f0.fits"), str(frames / "bad\0name.fits"), "/x/\ud800.fits",
             str(frames / "f1.fits")]
    results = list(classifier.run(paths, batch_size=4))
    assert [r.path for r in results] == paths
    assert [r.decision is not None for r in results] == [True, False, False, True]
    assert results[1].error == results[2].error == (
        "not a valid file name (it holds a NUL byte or an unencodable character)")


def test_any_exception_in_one_frame_s_work_is_that_frame_s_error(classifier, frames,
                                                                    monkeypatch):
    real = classifier.recipe.prepare

    def flaky(frame):
        if frame.data.shape == (300, 300) and frame.data[0, 0] == flaky.poison:
            raise KeyError("a bug met by one frame")
        return real(frame)

    flaky.poison = read_frame(frames / "f1.fits").data[0, 0]
    monkeypatch.setattr(type(classifier.recipe), "prepare", lambda self, f: flaky(f))
    results = list(classifier.run([str(frames / f"f{i}.fits") for i in range(3)]))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].error == ("internal error reading this frame (KeyError: "
                                "'a bug met by one frame')")


def cli(*argv: str, stdin: bytes = b"", env: dict | None = None, user: int | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", *argv],
                          input=stdin, capture_output=True, timeout=180, user=user,
                          env={**os.environ, "FRAMEQC_SOCKET": "/nonexistent/f.sock",
                               **(env or {})})


LIST = b"# frames\n%s/f0.fits\n%s/bad\0name.fits\n%s/caf\xe9.fits\n%s/f2.fits\n"


@pytest.mark.parametrize("how", ["stdin", "@LIST"])
def test_lists_with_nul_and_undecodable_bytes(runtime_model, frames, tmp_path, how):
    d = os.fsencode(str(frames))
    listing = LIST % (d, d, d, d)
    (tmp_path / "list.txt").write_bytes(listing)
    source = "-" if how == "stdin" else f"@{tmp_path / 'list.txt'}"
    proc = cli("classify", "--model", str(runtime_model["fp32"]), source, stdin=listing)
    out, err = proc.stdout.splitlines(), proc.stderr.decode(errors="replace")
    assert proc.returncode == 1 and "Traceback" not in err
    # the undecodable name was read and decided; it is written in the one form of names
    # that are not UTF-8 (docs/classifying.md), its byte as the four characters \xe9
    assert [line.rsplit(b"/", 1)[1] for line in out] == [b"f0.fits", b"caf\\xe9.fits",
                                                         b"f2.fits"]
    assert len(err.strip().splitlines()) == 1
    assert "not a valid file name (it holds a NUL byte" in err


@pytest.fixture()
def shared(tmp_path):
    """A folder another user may enter (pytest's own tmp folder is root's only)."""
    d = Path(tempfile.mkdtemp(prefix="frameqc-shared-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_unreadable_folders_are_one_line_each_and_skipped(shared):
    for name in ("open", "open/inner", "locked", "open/locked_inner"):
        (shared / name).mkdir()
    for name in ("open/a.fits", "open/inner/b.fits", "locked/c.fits", "open/locked_inner/d.fits"):
        (shared / name).write_bytes(b"x")
    (shared / "locked").chmod(0o700)
    (shared / "open/locked_inner").chmod(0o700)
    # 'nobody' may run the system's python, and import the sources grammar (which needs
    # nothing but the standard library) through a link to this checkout
    (shared / "pkg/frameqc").mkdir(parents=True)
    (shared / "pkg/frameqc/runtime").symlink_to(Path(__file__).resolve().parents[1] / "runtime")
    code = ("import sys; from frameqc.runtime.data.sources import expand; "
            "print(list(expand(sys.argv[1:])))")
    proc = subprocess.run([shutil.which("python3", path="/usr/bin:/bin"), "-c", code,
                           str(shared / "locked"), str(shared / "open")],
                          capture_output=True, text=True, user=NOBODY, timeout=60,
                          env={"PYTHONPATH": str(shared / "pkg"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([str(shared / "open/a.fits"),
                                       str(shared / "open/inner/b.fits")])
    assert proc.stderr.splitlines() == [
        f"frameqc: {shared / 'locked'}: cannot read this folder (Permission denied); skipped",
        f"frameqc: {shared / 'open/locked_inner'}: cannot read this folder "
        "(Permission denied); skipped"]


# -- frameqc bin ---------------------------------------------------------------------------

def test_bin_write_failure_is_one_line_and_leaves_no_temporary_file(frames, tmp_path):
    (tmp_path / "f0_bin2.fits").mkdir()  # a folder where the output goes: rename fails
    (tmp_path / "f0_bin2.fits" / "keep").write_text("x")
    code, out, err = run_cli("bin", "-b", "2", "-o", str(tmp_path), "--overwrite",
                             str(frames / "f0.fits"))
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {tmp_path / 'f0_bin2.fits'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0_bin2.fits"]
    (tmp_path / "file").write_text("x")  # an output folder under a file
    code, _, err = run_cli("bin", "-b", "2", "-o", str(tmp_path / "file" / "sub"),
                           str(frames / "f0.fits"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Not a directory" in err


def test_bin_reads_through_the_guarded_reader(frames, tmp_path, monkeypatch):
    png = tmp_path / "pic.png"
    from PIL import Image
    Image.new("RGB", (32, 32)).save(png)
    os.mkfifo(tmp_path / "pipe.fits")
    shutil.copy(frames / "f0.fits", tmp_path / "f0.fits")
    (tmp_path / "f0.fits.bz2").write_bytes(bz2.compress((frames / "f0.fits").read_bytes()))
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "50000")
    code, out, err = run_cli("bin", "-b", "2", str(png), str(tmp_path / "pipe.fits"),
                             str(tmp_path / "f0.fits"))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"frameqc: {png}: a PNG file: frameqc bin takes FITS frames",
        f"frameqc: {tmp_path / 'pipe.fits'}: is a FIFO, not a regular file",
        f"frameqc: {tmp_path / 'f0.fits'}: image of 300x300 pixels is over the limit of "
        "50000 ($FRAMEQC_MAX_PIXELS)"]
    monkeypatch.delenv("FRAMEQC_MAX_PIXELS")
    code, out, err = run_cli("bin", "-b", "3", str(tmp_path / "f0.fits.bz2"))
    assert code == 0 and out.strip() == str(tmp_path / "f0_bin3.fits"), err
    with fits.open(tmp_path / "f0_bin3.fits") as hdul:
        assert hdul[0].data.shape == (100, 100) and hdul[0].header["FQCBIN"] == 3


# -- messages ------------------------------------------------------------------------------

def test_library_advice_is_cut_and_the_fact_kept():
    with pytest.raises(OSError) as info:
        fits.open(io.BytesIO(b"NOT A FITS" + b" " * 2870))
    assert "ignore_missing_simple" in str(info.value)  # astropy's advice to its callers
    assert library_message(info.value) == (
        "No SIMPLE card found, this file does not appear to be a valid FITS file")
    assert library_message(ValueError(
        "Unparsable card (TFORM1), fix it first with .verify('fix')")) == \
        "Unparsable card (TFORM1)"
    assert library_message(OSError("cannot identify image file <_io.BytesIO object at "
                                    "0x7f3a2c>")) == "cannot identify image file"


def test_damaged_compressed_frames_say_no_library_advice():
    img = (np.arange(64 * 64) % 4000).reshape(64, 64).astype(np.float32)
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img)]).writeto(buf)
    packed = bytearray(buf.getvalue())
    at = packed.find(b"TFORM1  =")
    packed[at + 10: at + 30] = b"'abc                "  # astropy: "..., fix it first with
    with pytest.raises(FrameError) as info:                # .verify('fix')."
        read_frame(bytes(packed))
    assert str(info.value) == "damaged FITS file (Unparsable card (TFORM1))"


def test_reading_a_frame_leaves_pil_as_it_was(tmp_path, monkeypatch):
    """The pixel limit is frameqc's own: other images in the process open as before."""
    import io

    from PIL import Image

    from frameqc.runtime.data.reader import read_frame

    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "100000")
    buf = io.BytesIO()
    Image.new("RGB", (224, 224)).save(buf, format="PNG")
    read_frame(buf.getvalue())
    assert before == Image.MAX_IMAGE_PIXELS
    big = io.BytesIO()
    Image.new("RGB", (1000, 1000)).save(big, format="PNG")
    with pytest.raises(FrameError, match="over the limit of 100000"):
        read_frame(big.getvalue())
    assert Image.open(io.BytesIO(big.getvalue())).size == (1000, 1000)


def gzip_bomb(side: int = 16384) -> bytes:
    """A ~2 MB .fits.gz whose header claims a side x side float64 image (2 GiB inflated)."""
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -64), ("NAXIS", 2), ("NAXIS1", side),
                       ("NAXIS2", side)])
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, chunk = [co.compress(hdr.tostring().encode())], b"\0" * (1 << 24)
    parts += [co.compress(chunk) for _ in range(side * side * 8 // len(chunk))]
    return b"".join([*parts, co.flush()])

@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bombs")
    (d / "bomb.fits.gz").write_bytes(gzip_bomb())
    (d / "bomb.png").write_bytes(png_bomb())
    return {"gz": d / "bomb.fits.gz", "png": d / "bomb.png"}

# -- hostile files ----------------------------------------------------------------------

def test_decompression_bomb_png_does_not_stop_the_folder(runtime_model, good, bombs):
    shutil.copy(bombs["png"], good.parent / "b_bomb.png")
    write_fits(good.parent / "c_good.fits", make_frame("shutter", 681, 4))
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), str(good.parent))
    assert proc.returncode == 1
    assert [line.split()[-1].rsplit("/", 1)[1] for line in proc.stdout.splitlines()] == [
        "a_good.fits", "c_good.fits"]
    assert one_line(proc.stderr) and "b_bomb.png: image over the limit" in proc.stderr


def test_gzip_bomb_is_refused_from_its_header(runtime_model, bombs):
    code = ("import resource, subprocess, sys, time; t = time.monotonic(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(time.monotonic() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
            "sys.stderr.write(p.stderr); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m",
                           "frameqc.runtime.cli", "classify", "--model",
                           str(runtime_model["int8"]), str(bombs["gz"])],
                          capture_output=True, text=True, timeout=120)
    seconds, peak_mb = map(float, proc.stdout.split())
    assert proc.returncode == 1, proc.stderr
    assert "image of 16384x16384 pixels is over the limit of 33554432" in proc.stderr
    assert one_line(proc.stderr)
    assert peak_mb < 1000, f"inflated the bomb: {peak_mb} MB"  # 6.8 GB before
    print(f"gzip bomb refused in {seconds:.2f} s, peak {peak_mb:.0f} MB")


def test_pixel_limit_is_adjustable(good, runtime_model, monkeypatch):
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "1000000")
    code, _, err = run_cli("classify", "--model", str(runtime_model["int8"]), str(good))
    assert code == 1 and "image of 2048x2048 pixels is over the limit of 1000000" in err
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "lots")
    code, _, err = run_cli("classify", "--model", str(runtime_model["int8"]), str(good))
    assert code == 2 and "$FRAMEQC_MAX_PIXELS must be a whole number" in err and one_line(err)


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])  # a folder lists its frames
def test_anything_but_a_regular_file_is_refused_without_hanging(runtime_model, good, tmp_path,
                                                                 kind):
    odd = tmp_path / f"odd_{kind}.fits"
    if kind == "fifo":
        os.mkfifo(odd)
    elif kind == "device":
        odd = Path("/dev/zero")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(odd))
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), str(odd), str(good),
                   timeout=60)
    assert proc.returncode == 1 and good.name in proc.stdout
    assert one_line(proc.stderr) and "not a regular file" in proc.stderr

def test_frame_reader_refuses_each_bad_header_in_one_line():
    bad = fits.Header([("SIMPLE", True), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", "wide")])
    with pytest.raises(FrameError, match="bad or missing NAXIS1"):
        from frameqc.runtime.data.reader import read_frame

        read_frame(bad.tostring().encode() + b"\0" * 2880)
