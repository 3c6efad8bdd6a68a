"""One reader of a frame's header facts for every page (night, report, labelling)."""

import bz2
import gzip

import numpy as np
import pytest
from astropy.io import fits

from frameqc.runtime.data.facts import header_facts, header_keywords

HEADER = {"DATE-OBS": "2025-07-08T20:00:00.123", "FILTER1": "SDSS-R", "EXPTIME": 30.0,
          "OBJECT": "M31 field"}


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    d = tmp_path_factory.mktemp("facts")
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    fits.PrimaryHDU(data, header=fits.Header(list(HEADER.items()))).writeto(d / "a.fits")
    raw = (d / "a.fits").read_bytes()
    (d / "a.fits.gz").write_bytes(gzip.compress(raw))
    (d / "a.fits.bz2").write_bytes(bz2.compress(raw))
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data.astype(np.int32),
                                                       header=fits.Header(list(HEADER.items())))]
                 ).writeto(d / "a.fits.fz")
    (d / "junk.fits").write_bytes(b"SIMPLE  = nonsense\0" * 10)
    return d


@pytest.mark.parametrize("name", ["a.fits", "a.fits.gz", "a.fits.bz2", "a.fits.fz"])
def test_every_form_gives_the_same_facts_to_every_page(frames, name):
    keywords = header_keywords(frames / name)
    assert keywords == {"DATE-OBS": HEADER["DATE-OBS"], "OBJECT": "M31 field",
                        "EXPTIME": "30.0", "FILTER1": "SDSS-R"}
    assert header_facts(frames / name) == {"DATE-OBS": HEADER["DATE-OBS"], "filter": "SDSS-R",
                                           "exposure": "30 s", "object": "M31 field"}


def test_no_facts_is_never_a_failure(frames, tmp_path):
    (tmp_path / "fifo.fits").symlink_to("/dev/null")
    for path in (frames / "junk.fits", tmp_path / "missing.fits", tmp_path / "fifo.fits"):
        assert header_keywords(path) == {} and header_facts(path) == {}
