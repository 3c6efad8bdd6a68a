import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import block_reduce

from frameqc.runtime.data.binfile import bin_file, binned_name
from frameqc.runtime.data.synthetic import make_frame, write_fits
from frameqc.runtime.errors import FrameError

from helpers import run_cli


@pytest.mark.parametrize("name,out", [("h_e_1.fits", "h_e_1_bin9.fits"),
                                      ("h_e_1.fits.gz", "h_e_1_bin9.fits"),
                                      ("h_e_1.fits.fz", "h_e_1_bin9.fits"),
                                      ("x.FIT", "x_bin9.fits"), ("noext", "noext_bin9.fits")])
def test_binned_name(name, out, tmp_path):
    assert binned_name(tmp_path / name, 9) == out


def test_bin_keeps_dtype_header_and_records(tmp_path):
    data = make_frame("good", 1000, 0)
    write_fits(tmp_path / "f.fits", data, OBJECT="M31", CRPIX1=500.5, CDELT1=0.3)
    out = bin_file(tmp_path / "f.fits", 9)
    assert out == tmp_path / "f_bin9.fits"
    with fits.open(out) as hdul:
        hdr, binned = hdul[0].header, hdul[0].data
        assert binned.dtype == np.uint16 and binned.shape == (111, 111)
        np.testing.assert_array_equal(binned, block_reduce(data, 9, func=np.median))
        assert hdr["OBJECT"] == "M31" and hdr["FQCBIN"] == 9
        assert "median-binned 9x9" in str(hdr["HISTORY"])
        assert hdr["CDELT1"] == pytest.approx(2.7)
        assert hdr["CRPIX1"] == pytest.approx((500.5 - 0.5) / 9 + 0.5)


def test_bin_float_and_compressed(tmp_path):
    data = make_frame("wobble", 500, 1).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(tmp_path / "c.fits.fz")
    out = bin_file(tmp_path / "c.fits.fz", 2, outdir=tmp_path / "o")
    assert fits.getdata(out).dtype.kind == "f" and fits.getdata(out).shape == (250, 250)


def test_never_overwrites_unless_asked(tmp_path):
    write_fits(tmp_path / "f.fits", make_frame("good", 300, 0))
    (tmp_path / "f_bin3.fits").write_bytes(b"precious")
    with pytest.raises(FrameError, match="exists"):
        bin_file(tmp_path / "f.fits", 3)
    assert (tmp_path / "f_bin3.fits").read_bytes() == b"precious"
    code, _, err = run_cli("bin", "-b", "3", str(tmp_path / "f.fits"))
    assert code == 1 and "--overwrite" in err
    code, _, err = run_cli("bin", "-b", "3", "--overwrite", str(tmp_path / "f.fits"))
    assert code == 0 and fits.getdata(tmp_path / "f_bin3.fits").shape == (100, 100)


def test_bin_refusals(tmp_path):
    (tmp_path / "t.fits").write_text("text")
    code, _, err = run_cli("bin", "-b", "3", str(tmp_path / "t.fits"), str(tmp_path / "no.fits"))
    assert code == 1 and err.count("\n") == 2 and "Traceback" not in err
    assert run_cli("bin", "-b", "0", str(tmp_path / "t.fits"))[0] == 2
