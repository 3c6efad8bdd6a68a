"""End to end: a real vgg16 state_dict exported to fp32 and int8 ONNX (built once)."""

import json
import re

import numpy as np
import pytest

from helpers import LABELS, run_cli

torch = pytest.importorskip("torch")


def test_report_shows_parity_and_int8_agreement(exported):
    report = exported["report"]
    dps = [float(x) for x in re.findall(r"onnx vs torch.*max\|dp\|=(\S+)", report)]
    assert len(dps) == 2 and max(dps) <= 1e-4
    m = re.search(r"int8 vs fp32, held-out: n=(\d+), decisions agree on (\S+)% of (\d+) away",
                  report)
    assert m and int(m.group(1)) >= 60 and float(m.group(2)) >= 95.0, report
    print(report)
    assert "synthetic" in exported["stderr"]  # no --calibration: said so
    assert exported["int8"].is_file()


def test_a_really_bad_int8_model_is_refused_and_fp32_kept(exported, tmp_path):
    """Calibrated on one black frame, every activation scale collapses: decisions go."""
    import shutil

    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.onnx_export import ExportError, quantize_int8
    from frameqc.runtime.model.install import weights_file
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import Model

    fp32 = tmp_path / "m.onnx"
    shutil.copy(exported["fp32"], fp32)
    shutil.copy(weights_file(exported["fp32"]), tmp_path / weights_file(exported["fp32"]).name)
    before = fp32.read_bytes()
    card = Model(fp32).card
    with pytest.raises(ExportError, match=r"int8 refused: .* the fp32 model m.onnx is kept\. "
                                          r"Give --calibration DIR"):
        quantize_int8(fp32, card, [np.zeros((3, 224, 224), np.float32)],
                      synthetic_tensors(AsinhRecipe(), 24, seed=300))
    assert fp32.read_bytes() == before and not (tmp_path / "m.int8.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.onnx", weights_file(exported["fp32"]).name])  # no debris


def test_card_round_trip(exported, weights):
    import hashlib

    code, out, _ = run_cli("info", str(exported["fp32"]), "--json")
    card = json.loads(out)
    assert code == 0
    assert card["labels"] == list(LABELS) and card["alerts"] == ["Shutter"]
    assert card["threshold"] == 0.5 and card["input_size"] == 224
    assert card["recipe"] == {"name": "asinh", "binning": "auto", "black_percentile": 0.1,
                              "white_percentile": 99.0}
    assert card["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card["torch_version"] == torch.__version__ and card["precision"] == "fp32"
    code, out, _ = run_cli("info", str(exported["int8"]), "--json")
    int8 = json.loads(out)
    assert int8["precision"] == "int8" and int8["quantization"]["held_out"] >= 60
    assert 0 <= int8["quantization"]["mean_abs_dp"] <= int8["quantization"]["max_abs_dp"]
    code, out, _ = run_cli("info", str(exported["int8"]))
    assert "0=Shutter, 1=OK" in out


def test_int8_agrees_on_prepared_frames(exported, fits_dir):
    from frameqc.runtime.engine.pipeline import prepare
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import Model

    batch = np.stack([prepare(p, AsinhRecipe()).tensor for p in sorted(fits_dir.iterdir())])
    p32 = Model(exported["fp32"]).predict(batch)
    p8 = Model(exported["int8"]).predict(batch)
    assert p32[:, 0].std() > 0.05, "probabilities do not spread: the check would be trivial"
    assert np.mean(p32.argmax(1) == p8.argmax(1)) >= 0.9
    assert np.abs(p32 - p8).mean() < 0.05


def test_weights_file_beside_the_model(exported, tmp_path):
    """Models are OUT.onnx (graph, card) + OUT.onnx.<token>.data (weights, memory-mapped)."""
    import re
    import shutil

    from frameqc.runtime.model.install import weights_file

    for key in ("fp32", "int8"):
        data = weights_file(exported[key])
        assert re.fullmatch(re.escape(exported[key].name) + r"\.[0-9a-f]{8}\.data", data.name)
        assert data.parent == exported[key].parent
        assert data.stat().st_size > 10 * exported[key].stat().st_size
        assert data.stat().st_mode == exported[key].stat().st_mode  # readable alike
    shutil.copy(exported["int8"], tmp_path / "lonely.onnx")
    code, _, err = run_cli("info", str(tmp_path / "lonely.onnx"))
    assert code == 2 and weights_file(exported["int8"]).name + " is missing" in err
    assert err.count("\n") == 1
    (tmp_path / "linked.onnx").symlink_to(exported["int8"])  # found beside the real file
    assert run_cli("info", str(tmp_path / "linked.onnx"))[0] == 0


def test_graph_interface(exported):
    import onnx

    model = onnx.load(str(exported["fp32"]), load_external_data=False)
    assert model.opset_import[0].version >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == ["batch", 3, 224, 224]
    assert out.name == "probabilities"


@pytest.mark.parametrize("wrap", ["state_dict", "model_state_dict", "module"])
def test_wrapped_state_dicts_load(weights, tmp_path, wrap):
    from frameqc.export.weights import load_weights

    sd = torch.load(weights, weights_only=True)
    obj = {f"module.{k}": v for k, v in sd.items()} if wrap == "module" else {wrap: sd, "epoch": 3}
    torch.save(obj, tmp_path / "w.pt")
    w = load_weights(tmp_path / "w.pt")
    assert (w.hidden, w.n_classes) == (256, 2)


def _refusal(tmp_path, *argv):
    out = tmp_path / "out.onnx"
    code, _, stderr = run_cli("export", *argv, "-o", str(out))
    assert code == 2 and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "debris left"
    assert stderr.startswith("frameqc: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_refuses_wrong_label_count(weights, tmp_path):
    assert "2 outputs but 3 labels" in _refusal(tmp_path, str(weights), "--labels", "A,B,C")


def test_refuses_foreign_state_dict(tmp_path):
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet.pt")
    assert "not a vgg16 with the frameqc head" in _refusal(
        tmp_path, str(tmp_path / "resnet.pt"), "--labels", "A,B")
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "partial.pt")
    assert "key differences" in _refusal(tmp_path, str(tmp_path / "partial.pt"), "--labels", "A,B")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert "not a state_dict" in _refusal(tmp_path, str(tmp_path / "list.pt"), "--labels", "A,B")


def test_refuses_corrupt_and_missing(weights, tmp_path):
    (tmp_path / "bad.pt").write_bytes(weights.read_bytes()[:100_000])
    assert "not a loadable torch state_dict" in _refusal(
        tmp_path, str(tmp_path / "bad.pt"), "--labels", "A,B")
    assert "no such weights file" in _refusal(tmp_path, str(tmp_path / "x.pt"), "--labels", "A,B")


def test_refuses_bad_card_and_flags(weights, tmp_path):
    assert "--labels" in _refusal(tmp_path, str(weights))
    assert "not one of the labels" in _refusal(tmp_path, str(weights), "--labels", "A,B",
                                               "--alert", "C")
    assert "no such card" in _refusal(tmp_path, str(weights), "--card", "nope.toml")


def test_export_fails_when_onnx_and_torch_disagree(tmp_path):
    """A module whose traced graph differs from eager torch: nothing may be kept."""
    from frameqc.export.onnx_export import ExportError, export_fp32
    from frameqc.runtime.model.card import ModelCard

    class Unstable(torch.nn.Module):
        def forward(self, image):
            logits = image.mean((2, 3))[:, :2] + torch.rand(image.shape[0], 2)
            return torch.softmax(logits * 10, dim=1)

    out = tmp_path / "bad.onnx"
    frames = [np.random.default_rng(0).random((3, 224, 224), np.float32)]
    with pytest.raises(ExportError, match="disagree"):
        export_fp32(Unstable(), ModelCard(labels=LABELS), out, frames)
    assert list(tmp_path.iterdir()) == []


def test_export_with_card_file_and_calibration_dir(weights, tmp_path, fits_dir):
    """--card supplies labels/alerts; --calibration frames are used, the broken ones named."""
    from pathlib import Path

    card = Path(__file__).parent.parent / "models" / "touse2.toml"
    (tmp_path / "cal").mkdir()
    for p in sorted(fits_dir.iterdir())[:4]:
        (tmp_path / "cal" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "cal" / "junk.fits").write_bytes(b"junk")
    out = tmp_path / "touse2.onnx"
    code, stdout, stderr = run_cli("export", str(weights), "--card", str(card),
                                   "--calibration", str(tmp_path / "cal"), "-o", str(out))
    assert code == 0, stderr
    assert "skipping" in stderr and "junk.fits" in stderr
    assert "n=4" in stdout
    code, info, _ = run_cli("info", str(out), "--json")
    assert json.loads(info)["notes"].startswith("IO:O shutter classifier, 2022")


def test_export_bf16_writes_a_gated_model_beside_fp32(weights, tmp_path, fits_dir,
                                                       monkeypatch):
    """``--bf16`` end to end: the report, the card (its gate on OpenVINO, this CPU's bf16
    units), ``frameqc info``, and a record that says bf16 on openvino."""
    pytest.importorskip("openvino")
    from frameqc.runtime.model.engines.cpuflags import cpu_flags, has_bf16

    if not has_bf16(cpu_flags()):
        pytest.skip("this CPU has no bf16 units: --bf16 is refused (tests/test_engines.py)")
    out = tmp_path / "m.onnx"
    code, report, err = run_cli("export", str(weights), "--labels", ",".join(LABELS),
                                "--alert", "Shutter", "-o", str(out), "--bf16")
    assert code == 0, err
    m = re.search(r"bf16 vs fp32, held-out: n=(\d+), decisions agree on (\S+)% of (\d+) away"
                  r".*; on openvino", report)
    assert m and int(m.group(1)) >= 60 and float(m.group(2)) >= 95.0, report
    assert re.search(r"wrote \S+m\.bf16\.onnx \+ \.data \(\d+\.\d MiB, bf16,", report)
    code, out_json, _ = run_cli("info", str(tmp_path / "m.bf16.onnx"), "--json")
    card = json.loads(out_json)
    assert card["precision"] == "bf16" and list(card["quantization"]["engines"]) == ["openvino"]
    assert card["quantization"]["max_abs_dp"] < 0.1
    assert not (tmp_path / "m.int8.onnx").exists()
    monkeypatch.setenv("FRAMEQC_ENGINE", "auto")
    monkeypatch.setenv("FRAMEQC_CACHE", str(tmp_path / "cache"))
    code, line, err = run_cli("classify", "--model", str(tmp_path / "m.bf16.onnx"),
                              "--format", "json", str(fits_dir / "prebinned_227.fits"))
    rec = json.loads(line)
    assert code == 0 and (rec["precision"], rec["engine"]) == ("bf16", "openvino"), err
