import numpy as np
import pytest
from astropy.nddata import block_reduce

from frameqc.runtime.data.binning import auto_factor, median_bin


@pytest.mark.parametrize("shape,factor", [((2048, 2048), 9), ((100, 73), 4), ((30, 30), 3),
                                          ((17, 40), 2)])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32, np.float64])
def test_matches_astropy_block_reduce(shape, factor, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 60000).astype(dtype)
    ours = median_bin(data, factor)
    ref = block_reduce(data, factor, func=np.median)
    assert ours.shape == (shape[0] // factor, shape[1] // factor)
    np.testing.assert_array_equal(ours, ref)


def test_remainder_is_trimmed_from_the_end():
    data = np.arange(7 * 7, dtype=np.float64).reshape(7, 7)
    data[6, :] = data[:, 6] = 1e9  # the last row and column cannot fill a box
    assert median_bin(data, 3).max() < 1e9


def test_median_of_finite_pixels_only():
    data = np.ones((4, 4), np.float32)
    data[0, 0], data[0, 1], data[1, 0] = 5.0, np.nan, np.inf
    data[2:, 2:] = np.nan
    out = median_bin(data, 2)
    assert out[0, 0] == 3.0  # the finite pixels of the box are 5 and 1
    assert np.isnan(out[1, 1])
    assert out[0, 1] == 1.0 and out[1, 0] == 1.0


def test_factor_one_and_bad_factors():
    data = np.arange(12).reshape(3, 4)
    assert median_bin(data, 1) is data
    with pytest.raises(ValueError):
        median_bin(data, 0)
    with pytest.raises(ValueError, match="smaller than one"):
        median_bin(data, 5)


@pytest.mark.parametrize("shape,factor", [((2048, 2048), 9), ((227, 227), 1), ((4096, 4096), 18),
                                          ((1536, 2048), 6), ((300, 200), 1), ((100, 100), 1)])
def test_auto_factor(shape, factor):
    assert auto_factor(shape) == factor
