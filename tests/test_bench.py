"""The benchmark's own arithmetic: the network's size and a child's peak memory."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))

from run import child_stats, summary, vgg16_macs


def test_vgg16_macs_is_the_known_figure():
    """torchvision's vgg16 is 15,470,264,320 MAC at 224x224; ours swaps its last layer."""
    stock_last, head = 4096 * 1000, 4096 * 256 + 256 * 2
    assert vgg16_macs() - head + stock_last == 15_470_264_320


def test_child_peak_rss_is_its_own():
    wall, rss = child_stats([sys.executable, "-c", "b = bytearray(200 * 2**20); b[::4096] = "
                             "b'x' * len(b[::4096])"])
    assert 200 <= rss < 300 and wall > 0


def test_summary_median_and_p95():
    s = summary([float(v) for v in range(1, 21)])
    assert s["median_s"] == 10.5 and s["p95_s"] == 19.0 and s["min_s"] == 1.0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_floor_builds_its_session_as_a_one_shot_does(precision):
    from floor import options

    from frameqc.runtime.model.session import session_options, want_prepack

    prepack = want_prepack(precision)
    assert prepack == (precision == "int8")  # the rule the floor's caller follows
    ours, theirs = options(2, prepack), session_options(2, prepack=prepack, optimize=False)
    for attr in ("intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                 "graph_optimization_level", "log_severity_level"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    for key in ("session.intra_op.allow_spinning", "session.disable_prepacking"):
        assert ours.get_session_config_entry(key) == theirs.get_session_config_entry(key)
