"""Engines behind the one session owner: which may run a model, which is chosen, and that
they compute what the card validated (bf16 and int8 gates, threads, records, bad input).

The suite pins onnxruntime (conftest); these tests choose engines themselves, with the
measurements kept in a cache folder of their own.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model import engines
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.engines import candidates, refusal
from frameqc.runtime.model.engines.choice import pick
from frameqc.runtime.model.engines.cpuflags import cpu_flags, has_bf16, units

from helpers import run_cli

openvino = pytest.importorskip("openvino")  # in the test extra: CI runs these

AMX = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                 "amx_int8"})
EPYC = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16"})
OLD = frozenset({"avx2", "avx512f", "avx512_vnni"})  # Cascade Lake: VNNI, no bf16
PLAIN = frozenset({"avx2"})

BASE = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",))
FP32 = BASE
INT8_OLD = BASE.with_(precision="int8", quantization={"held_out": 64})  # before engines
INT8_BOTH = BASE.with_(precision="int8", quantization={"engines": {"onnxruntime": {},
                                                                   "openvino": {}}})
BF16 = BASE.with_(precision="bf16", quantization={"engines": {"openvino": {}}})


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path):
    """Every measurement these tests make goes to a cache folder of the test's own."""
    monkeypatch.setenv("FRAMEQC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "engines.json"


@pytest.fixture()
def auto(monkeypatch, cache):
    """Engines chosen as a user's process chooses them, measurements in a fresh cache."""
    monkeypatch.delenv("FRAMEQC_ENGINE", raising=False)
    return cache


# -- the choice follows the card and the CPU's flags (faked) ---------------------------------

@pytest.mark.parametrize("flags,fp32,int8_old,int8_both,bf16", [
    (AMX, ["onnxruntime", "openvino"], ["onnxruntime"], ["onnxruntime", "openvino"],
     ["openvino"]),
    (EPYC, ["onnxruntime", "openvino"], ["onnxruntime"], ["onnxruntime", "openvino"],
     ["openvino"]),
    (OLD, ["onnxruntime", "openvino"], ["onnxruntime"], ["onnxruntime", "openvino"], []),
    (PLAIN, ["onnxruntime", "openvino"], ["onnxruntime"], ["onnxruntime", "openvino"], []),
], ids=["amx", "epyc-avx512bf16", "vnni-only", "avx2"])
def test_candidates_follow_the_card_and_the_cpu_flags(flags, fp32, int8_old, int8_both, bf16):
    assert candidates(FP32, flags) == fp32
    assert candidates(INT8_OLD, flags) == int8_old  # judged on onnxruntime only
    assert candidates(INT8_BOTH, flags) == int8_both
    assert candidates(BF16, flags) == bf16


def test_a_bf16_model_on_a_cpu_without_bf16_units_is_one_line():
    with pytest.raises(UsageError, match=r"^this CPU has no bf16 units \(amx_bf16 or "
                                         r"avx512_bf16 in /proc/cpuinfo\): serve the fp32"):
        pick(BF16, "auto", OLD)
    with pytest.raises(UsageError, match="runs only on the engines its export gate judged "
                                         r"\(openvino\), not on onnxruntime"):
        pick(BF16, "onnxruntime", AMX)
    with pytest.raises(UsageError, match=r"judged \(onnxruntime\), not on openvino"):
        pick(INT8_OLD, "openvino", AMX)
    assert pick(BF16, "auto", EPYC) == ["openvino"]
    assert pick(FP32, "onnxruntime", PLAIN) == ["onnxruntime"]


def test_without_the_extra_openvino_is_named_as_missing(monkeypatch):
    monkeypatch.setattr(engines, "installed", lambda name: name == "onnxruntime")
    assert candidates(FP32, AMX) == ["onnxruntime"]
    assert refusal("openvino", FP32, AMX) == ("the openvino engine is not installed: "
                                              "pip install 'frameqc[openvino]'")
    with pytest.raises(UsageError, match=r"openvino engine is not installed: pip install "):
        pick(BF16, "auto", AMX)


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512f "
                    "avx512_vnni amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    flags = cpu_flags(info)
    assert "amx_bf16" in flags and has_bf16(flags) and "fpu" in flags
    assert units(flags) == "amx_bf16, avx512_vnni"
    assert cpu_flags(tmp_path / "missing") == frozenset() and not has_bf16(frozenset())


def test_the_flags_read_here_are_this_machines():
    """For real: what the choice reads is what the kernel says about this CPU."""
    text = Path("/proc/cpuinfo").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("flags"))
    assert cpu_flags() == frozenset(line.split(":", 1)[1].split())
    assert has_bf16(cpu_flags()) == (" avx512_bf16" in line or " amx_bf16" in line)


# -- for real on this machine ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bf16_model(runtime_model, tmp_path_factory):
    """``make_bf16`` of the runtime's fp32 model (no torch), gated on this CPU."""
    if not has_bf16(cpu_flags()):
        pytest.skip("this CPU has no bf16 units")
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.onnx_export import make_bf16
    from frameqc.runtime.model.install import weights_file
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.recipes import AsinhRecipe

    folder = tmp_path_factory.mktemp("bf16")
    fp32 = folder / "model.onnx"
    shutil.copy(runtime_model["fp32"], fp32)
    shutil.copy(weights_file(runtime_model["fp32"]), folder)
    path, verdict = make_bf16(fp32, read_card(fp32), synthetic_tensors(AsinhRecipe(), 12, 40))
    return {"fp32": fp32, "bf16": path, "verdict": verdict}


def test_bf16_export_writes_a_gated_half_size_model(bf16_model):
    from frameqc.runtime.model.install import weights_file
    from frameqc.runtime.model.peek import read_card

    path = bf16_model["bf16"]
    assert path.name == "model.bf16.onnx"
    card = read_card(path)
    q = card.quantization
    assert card.precision == "bf16" and set(q["engines"]) == {"openvino"}
    assert q["held_out"] == 12 and 0 <= q["mean_abs_dp"] <= q["max_abs_dp"] < 0.01
    assert q["cpu"] == units(cpu_flags())
    fp32_bytes = weights_file(bf16_model["fp32"]).stat().st_size
    assert 0.45 < weights_file(path).stat().st_size / fp32_bytes < 0.55
    code, out, _ = run_cli("info", str(path))
    assert code == 0 and "bf16: probabilities within mean |dp|" in out
    assert "judged on openvino" in out and "openvino: can run it" in out


def test_the_same_frames_agree_within_the_cards_bounds(bf16_model, runtime_model, fits_dir,
                                                       auto):
    """fp32 on both engines to float32 rounding; int8 and bf16 within their gates' margin."""
    from frameqc.runtime.engine.pipeline import prepare
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import Model

    x = np.stack([prepare(p, AsinhRecipe()).tensor for p in sorted(fits_dir.iterdir())[:6]])
    ref = Model(runtime_model["fp32"], engine="onnxruntime").predict(x)
    assert np.abs(Model(runtime_model["fp32"], engine="openvino").predict(x) - ref).max() < 1e-5
    int8 = read_card(runtime_model["int8"])
    assert set(int8.quantization["engines"]) == {"onnxruntime", "openvino"}
    for name in ("onnxruntime", "openvino"):
        got = Model(runtime_model["int8"], engine=name).predict(x)
        assert np.abs(got - ref).max() <= int8.margin, name
    bf16 = Model(bf16_model["bf16"])
    assert bf16.engine == "openvino" and bf16.card.precision == "bf16"
    assert np.abs(bf16.predict(x) - ref).max() <= bf16.card.margin


def test_the_choice_is_measured_once_and_remembered(runtime_model, auto, capfd):
    """For real: both engines timed on this CPU, the faster runs, the next process reads it."""
    from frameqc.runtime.model.session import Model

    first = Model(runtime_model["fp32"], threads=1)
    said = capfd.readouterr().err
    store = json.loads(auto.read_text())
    (entry,) = store.values()
    timings = entry["timings"]
    assert set(timings) == {"onnxruntime", "openvino"}
    fastest = min(timings, key=lambda n: timings[n]["seconds_per_frame"])
    assert first.engine == fastest
    assert said.startswith("frameqc: measured the engines for model.onnx on this CPU (")
    assert said.rstrip().endswith(f"{fastest} runs it from now on")
    later = Model(runtime_model["fp32"], threads=1)
    assert later.engine == fastest and capfd.readouterr().err == ""
    Model(runtime_model["fp32"], threads=2)  # another thread count is another measurement
    assert len(json.loads(auto.read_text())) == 2


def test_a_faster_engine_on_record_is_the_one_run(runtime_model, auto):
    """The verdict is the measurement's, not a preference: fake one and it is followed."""
    from frameqc.runtime.model.engines import choice
    from frameqc.runtime.model.session import Model

    material = choice.key(os.path.realpath(runtime_model["fp32"]), 1, cpu_flags())
    for name, seconds in (("onnxruntime", 9.0), ("openvino", 0.01)):
        choice.remember(material, name, choice.Timing(seconds, True))
    assert Model(runtime_model["fp32"], threads=1).engine == "openvino"
    choice.remember(material, "openvino", choice.Timing(99.0, True))
    assert Model(runtime_model["fp32"], threads=1).engine == "onnxruntime"


def test_timings_taken_apart_are_measured_again_together(runtime_model, auto, capfd):
    """An engine timed alone (pinned, at another moment and load) is not compared with
    another's: a load with the choice to make times both, one after the other, and a
    pinned load afterwards keeps their verdict."""
    from frameqc.runtime.model.engines import choice
    from frameqc.runtime.model.session import Model

    material = choice.key(os.path.realpath(runtime_model["fp32"]), 1, cpu_flags())
    choice.remember(material, "openvino", choice.Timing(1e-4, True, together=False))
    choice.remember(material, "onnxruntime", choice.Timing(9.0, True, together=False))
    Model(runtime_model["fp32"], threads=1)
    assert "measured the engines" in capfd.readouterr().err
    kept = choice.remembered(material)
    assert all(t.together and 1e-3 < t.seconds_per_frame < 9 for t in kept.values()), kept
    Model(runtime_model["fp32"], threads=1, engine="openvino")
    assert choice.remembered(material) == kept and capfd.readouterr().err == ""


@pytest.mark.parametrize("threads", [1, 2])
def test_threads_are_honoured_by_both_engines(runtime_model, threads):
    from frameqc.runtime.model.session import Model

    ov = Model(runtime_model["fp32"], threads=threads, engine="openvino")
    assert ov.session.threads() == threads and ov.session.arithmetic() == "f32"
    ort = Model(runtime_model["fp32"], threads=threads, engine="onnxruntime")
    assert ort.threads == threads
    assert ort.session.get_session_options().intra_op_num_threads == threads


def test_openvino_takes_the_cpu_share_by_default(runtime_model, monkeypatch):
    """Without --threads, the CPUs this process may use (affinity and cgroup quota)."""
    from frameqc.runtime.model import cpu
    from frameqc.runtime.model.session import Model

    monkeypatch.delenv("FRAMEQC_THREADS", raising=False)
    monkeypatch.setattr(cpu, "cgroup_cpu_quota", lambda root=None: 1)
    assert Model(runtime_model["fp32"], engine="openvino").session.threads() == 1


def test_openvino_never_takes_its_bf16_default_for_an_fp32_model(runtime_model):
    """OpenVINO computes in bf16 by default wherever the CPU has bf16 units (here too)."""
    from frameqc.runtime.model.session import Model

    core_default = str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    model = Model(runtime_model["fp32"], engine="openvino")
    assert model.session.arithmetic() == "f32"
    if has_bf16(cpu_flags()):
        assert "bfloat16" in core_default  # what frameqc overrides


def test_records_name_precision_and_engine(bf16_model, runtime_model, fits_dir, auto):
    frame = str(fits_dir / "prebinned_227.fits")
    code, out, err = run_cli("classify", "--model", str(bf16_model["bf16"]), "--format",
                             "json", frame)
    rec = json.loads(out)
    assert code == 0 and (rec["precision"], rec["engine"]) == ("bf16", "openvino"), err
    code, out, err = run_cli("classify", "--model", str(runtime_model["int8"]), "--engine",
                             "onnxruntime", "--format", "json", frame)
    rec = json.loads(out)
    assert code == 0 and (rec["precision"], rec["engine"]) == ("int8", "onnxruntime"), err
    assert "FRAMEQC_ENGINE" not in os.environ  # --engine is the command's, not the process's


# -- bad input: one line, exit 2, nothing written ------------------------------------------------

def test_engine_openvino_without_the_extra(runtime_model, fits_dir, monkeypatch):
    monkeypatch.setattr(engines, "installed", lambda name: name == "onnxruntime")
    code, out, err = run_cli("classify", "--model", str(runtime_model["fp32"]), "--engine",
                             "openvino", str(fits_dir / "prebinned_227.fits"))
    assert (code, out) == (2, "")
    assert err == ("frameqc: the openvino engine is not installed: "
                   "pip install 'frameqc[openvino]'\n")


def test_a_bf16_model_where_the_cpu_cannot_run_it(bf16_model, fits_dir, monkeypatch, auto):
    from frameqc.runtime.model.engines import choice

    monkeypatch.setattr(choice, "cpu_flags", lambda: OLD)
    code, out, err = run_cli("classify", "--model", str(bf16_model["bf16"]),
                             str(fits_dir / "prebinned_227.fits"))
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("frameqc: this CPU has no bf16 units")


@pytest.mark.parametrize("why", ["no openvino", "no bf16 units"])
def test_export_bf16_where_it_cannot_be_checked(why, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from frameqc.export import bf16

    if why == "no openvino":
        monkeypatch.setattr(engines, "installed", lambda name: name == "onnxruntime")
    else:
        monkeypatch.setattr(bf16, "cpu_flags", lambda: OLD)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not read: refused before")
    code, out, err = run_cli("export", str(weights), "--labels", "Shutter,OK", "-o",
                             str(tmp_path / "m.onnx"), "--bf16")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("frameqc: --bf16 is measured with ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_a_server_answers_clients_of_its_engine_only(runtime_model, fits_dir, tmp_path,
                                                     monkeypatch):
    """The route matches the model file as before; a client pinned to another engine
    than the server's would get other digits, so it is not answered by it."""
    from serving import Server

    frame = str(fits_dir / "prebinned_227.fits")
    sock = tmp_path / "s.sock"
    with Server(runtime_model["fp32"], sock, "--engine", "openvino") as server:
        assert server.status()["engine"] == "openvino"
        monkeypatch.delenv("FRAMEQC_ENGINE")
        code, out, err = run_cli("classify", "--model", str(runtime_model["fp32"]),
                                 "--socket", str(sock), "--format", "json", frame)
        assert code == 0 and json.loads(out)["engine"] == "openvino", err
        assert server.status()["frames"] == 1
        code, out, err = run_cli("classify", "--model", str(runtime_model["fp32"]),
                                 "--socket", str(sock), "--engine", "onnxruntime", frame)
        assert (code, out) == (2, "")
        assert err == (f"frameqc: the server on {sock} runs openvino, not the onnxruntime "
                       "engine asked for\n")
        assert server.status()["frames"] == 1


def test_processes_starting_together_measure_once_and_agree(runtime_model, auto):
    """The archive's workers start together: one measures, the others read its verdict
    (measuring under each other's load, they chose different engines)."""
    import subprocess
    import sys

    code = ("import sys; from frameqc.runtime.model.session import Model; "
            "print(Model(sys.argv[1], threads=1).engine)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(runtime_model["fp32"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ}) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    assert len({o.strip() for o, _ in outs}) == 1
    assert sum(e.count("measured the engines") for _, e in outs) == 1
