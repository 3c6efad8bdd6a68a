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


def _run(cold_fp32: float = 0.33, with_demo: bool = False) -> dict:
    """A benchmark run's figures, as bench() gathers them (no torch, no demo)."""
    def rep(median: float, low: float | None = None, rss: float = 100.0) -> dict:
        return {"n": 3, "median_s": median, "p95_s": median, "min_s": low or median,
                "peak_rss_mb": rss}

    def batch(rate: float) -> dict:
        return {"frames": 48, "seconds": 48 / rate, "frames_per_s": rate,
                "steady_frames_per_s": rate, "peak_rss_mb": 600.0}

    engines = {f"{p} on {e}": {"precision": p, "engine": e, "batch8_s": 1 / r,
                                "batch1_s": 1 / r, "frames_per_s": r, "gflops": 30.9 * r,
                                "max_dp": 0.0, "whole_batches": True}
               for p, e, r in (("fp32", "onnxruntime", 10.0), ("int8", "onnxruntime", 40.0),
                               ("bf16", "openvino", 30.0))}
    r = {"machine": {"cpu": "Test CPU", "units": "avx512_bf16", "affinity": 2,
                     "load_before": (1.0, 1.0, 1.0), "load_after": (1.0, 1.0, 1.0)},
         "models": {"fp32": "m.onnx", "int8": "m.int8.onnx", "bf16": "m.bf16.onnx"},
         "engines": engines, "cold_fp32_openvino": rep(0.9),
         "floor": {"python": rep(0.01)}, "sgemm_gflops": 350.0, "vgg16_gmacs": 15.47,
         "stages_fp32_2048": {"read": 0.006, "bin": 0.008, "prepare": 0.001, "infer": 0.1}}
    for p in ("fp32", "int8", "bf16"):
        r[f"cold_{p}"] = rep(cold_fp32 if p == "fp32" else 0.33, rss=120.0)
        r[f"resident_{p}"] = rep(0.06) | {"engine": "onnxruntime", "server_s": 0.04,
                                          "server_peak_rss_mb": 500.0, "floor": rep(0.055)}
        r[f"batch_binned_{p}"] = batch({"fp32": 9.0, "int8": 36.0, "bf16": 27.0}[p])
        r[f"batch_{p}"] = batch(20.0)
    for p in ("fp32", "int8"):
        r[f"floor_{p}"] = rep(0.3) | {"prepare_s": 0.02}
    r["archive"] = {"frames": 64, "distinct_frames": 12, "repeat": 2, "model": "int8"} | {
        kind: {"seconds": 5.0, "frames_per_s": 128 / 5.0, "fixed_s": 1.0,
               "marginal_frames_per_s": rate} for kind, rate in (("archive", 31.0),
                                                                 ("batch", 32.0))}
    if with_demo:
        r["demo"] = {"first_s": 18.0, "first_peak_rss_mb": 800.0, "second_s": 1.4,
                     "second_peak_rss_mb": 600.0, "disk_mb": 588.0}
    return r


def test_targets_are_ratios_and_unmeasured_ones_say_so():
    from run import TARGETS, report

    r = _run()
    text = report(r)
    assert "target batch on pre-binned frames / the best engine's raw rate >= 0.8: 0.90 " \
           "(best of repeats 0.90)  met  [held by CI]" in text
    assert "target demo first run seconds <= 20: -  not measured in this run" in text
    assert "target archive / batch rate (same cores) >= 0.9: 0.97  met  [held by CI]" in text
    assert "archive on a LocalCluster: int8, 128 full-size frames" in text
    assert "NOT MET" not in text and r["held_missed"] == []
    assert "int8 on onnxruntime" in text and "bf16 on openvino" in text
    held = [name for name, (_, _, hold) in TARGETS.items() if hold]
    assert all(f"target {name} " in text for name in held)


def test_a_held_target_missed_is_named():
    from run import report

    r = _run(cold_fp32=0.9)  # 3x its floor
    text = report(r)
    assert "target cold fp32 one-shot / its floor <= 1.2: 3.00 (best of repeats 3.00)  " \
           "NOT MET  [held by CI]" in text
    assert r["held_missed"] == ["cold fp32 one-shot / its floor"]
