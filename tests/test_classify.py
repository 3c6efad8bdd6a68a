"""End to end: real FITS files through ``frameqc classify`` against the seed pipeline."""

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest

from helpers import LABELS, run_cli

torch = pytest.importorskip("torch")

FORMS = ["full_good.fits", "full_shutter.fits", "full_wobble.fits", "prebinned_227.fits",
         "float32.fits", "float64_nan.fits", "int32.fits", "gzipped.fits.gz",
         "fpacked.fits.fz", "nonsquare.fits"]


@pytest.fixture(scope="session")
def seed(weights):
    from seed_reference import seed_network

    return seed_network(torch.load(weights, weights_only=True), len(LABELS))


def test_fp32_matches_the_seed_pipeline(exported, fits_dir, seed):
    from seed_reference import seed_probabilities

    paths = [str(fits_dir / f) for f in FORMS]
    ref = seed_probabilities(seed, paths)
    code, out, err = run_cli("classify", "--model", str(exported["fp32"]), "--format", "json",
                             *paths)
    assert code == 0, err
    got = np.array([[r["probabilities"][k] for k in LABELS]
                    for r in map(json.loads, out.splitlines())])
    assert ref[:, 0].std() > 0.05, "probabilities do not spread: parity would be trivial"
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_text_line_is_the_seeds(exported, fits_dir):
    path = str(fits_dir / "full_good.fits")
    code, out, _ = run_cli("classify", "--model", str(exported["fp32"]), path)
    assert code == 0
    m = re.fullmatch(r"(\d) (\d\.\d{1,3}) (\S+) (.+)\n", out)
    assert m, out
    index, prob, label, shown = m.groups()
    assert LABELS[int(index)] == label and shown == path and 0.5 <= float(prob) <= 1.0
    code, js, _ = run_cli("classify", "--model", str(exported["fp32"]), "-f", "json", path)
    assert prob == str(np.round(json.loads(js)["probability"], 3))  # upstream's print


def test_json_csv_and_errors_keep_going(exported, broken_dir):
    model = str(exported["fp32"])
    code, out, err = run_cli("classify", "--model", model, "--format", "json", str(broken_dir))
    assert code == 1
    rows = [json.loads(line) for line in out.splitlines()]
    ok = [r for r in rows if "label" in r]
    bad = {r["path"].rsplit("/", 1)[1]: r["error"] for r in rows if "error" in r}
    assert len(rows) == 10 and len(ok) == 2
    assert set(ok[0]) == {"path", "label", "index", "probability", "probabilities", "model",
                          "seconds", "doubtful", "date_obs", "night", "precision", "engine"}
    assert "damaged FITS" in bad["b_truncated.fits"] and bad["c_empty.fits"] == "empty file"
    assert "not a FITS" in bad["d_text.fits"] and "after binning" in bad["e_small.fits"]
    assert "flat frame" in bad["f_flat.fits"] and "no finite pixel" in bad["g_allnan.fits"]
    assert "no 2-D image" in bad["h_table.fits"]
    assert "PNG file cannot go to a model whose recipe 'asinh'" in bad["i_image.png"]
    assert err.count("\n") == 8 and "Traceback" not in err
    assert all(line.startswith("frameqc: ") for line in err.splitlines())
    code, out, _ = run_cli("classify", "--model", model, "--format", "csv", str(broken_dir))
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 1 and len(table) == 10
    assert list(table[0])[:6] == ["path", "label", "index", "probability", "p_Shutter", "p_OK"]
    assert sum(1 for r in table if r["error"]) == 8


def test_text_output_skips_failures_and_exit_codes(exported, broken_dir):
    model = str(exported["fp32"])
    code, out, err = run_cli("classify", "--model", model, str(broken_dir / "full_good.fits"),
                             str(broken_dir / "c_empty.fits"))
    assert code == 1 and out.count("\n") == 1 and "c_empty.fits: empty file" in err
    assert run_cli("classify", "--model", model, "--threshold", "2", "x")[0] == 2
    assert run_cli("classify", "--model", model, "--bin", "zero", "x")[0] == 2
    code, _, err = run_cli("classify", "--model", str(broken_dir / "full_good.fits"), "x")
    assert code == 2 and "not a loadable ONNX model" in err


def test_model_from_environment(exported, fits_dir, monkeypatch):
    monkeypatch.setenv("FRAMEQC_MODEL", str(exported["int8"]))
    code, out, _ = run_cli("classify", str(fits_dir / "full_good.fits"))
    assert code == 0 and out.endswith("full_good.fits\n")
    monkeypatch.delenv("FRAMEQC_MODEL")
    code, _, err = run_cli("classify", str(fits_dir / "full_good.fits"))
    assert code == 2 and "--model" in err and "$FRAMEQC_MODEL" in err


def test_stdin_threshold_bin_log_preview(exported, fits_dir, tmp_path, monkeypatch):
    model = str(exported["fp32"])
    paths = [str(fits_dir / f) for f in ("full_good.fits", "full_shutter.fits")]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(paths) + "\n\n"))
    log, preview = tmp_path / "classifier.log", tmp_path / "preview"
    code, out, _ = run_cli("classify", "--model", model, "--format", "json", "--log", str(log),
                           "--preview", str(preview), "-")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in rows] == paths
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 2 and {"time", "host", "timings", "label"} <= set(entries[0])
    assert set(entries[0]["timings"]) == {"read", "bin", "prepare", "infer"}
    from PIL import Image

    img = np.asarray(Image.open(preview / "full_good.fits.png"))
    from frameqc.runtime.engine.pipeline import prepare
    from frameqc.runtime.model.recipes import AsinhRecipe

    expected = prepare(paths[0], AsinhRecipe()).tensor[0] * 255
    np.testing.assert_array_equal(img, np.rint(expected))
    # --threshold 1.0: the alert label can no longer be given
    code, out, _ = run_cli("classify", "--model", model, "--threshold", "1.0", "--format",
                           "json", *paths)
    assert all(json.loads(line)["label"] == "OK" for line in out.splitlines())
    # --bin none on a full frame uses the centre of the unbinned frame: a different input
    code, a, _ = run_cli("classify", "--model", model, "--format", "json", paths[0])
    code, b, _ = run_cli("classify", "--model", model, "--format", "json", "--bin", "none",
                         paths[0])
    assert json.loads(a)["probabilities"] != json.loads(b)["probabilities"]


def test_nothing_written_beside_inputs(exported, fits_dir, tmp_path):
    work = tmp_path / "in"
    shutil.copytree(fits_dir, work)
    before = sorted(p.name for p in work.iterdir())
    run_cli("classify", "--model", str(exported["fp32"]), str(work))
    assert sorted(p.name for p in work.iterdir()) == before


def test_binned_file_classifies_like_the_full_frame(exported, fits_dir, tmp_path):
    """``frameqc bin -b 9`` then classify == classify of the full frame (the seed's route)."""
    full = fits_dir / "full_shutter.fits"
    code, out, _ = run_cli("bin", "-b", "9", "-o", str(tmp_path), str(full))
    binned = out.strip()
    assert code == 0 and binned.endswith("full_shutter_bin9.fits")
    _, a, _ = run_cli("classify", "--model", str(exported["fp32"]), "-f", "json", str(full))
    _, b, _ = run_cli("classify", "--model", str(exported["fp32"]), "-f", "json", binned)
    assert json.loads(a)["probabilities"] == json.loads(b)["probabilities"]


def test_many_frames_in_batches(exported, fits_dir, tmp_path):
    """More frames than one batch, with failures between them, come out in order."""
    names = []
    for i in range(19):
        src = fits_dir / ("prebinned_227.fits" if i % 5 else "full_good.fits")
        (tmp_path / f"f{i:02d}.fits").write_bytes(src.read_bytes() if i != 7 else b"bad")
        names.append(f"f{i:02d}.fits")
    code, out, _ = run_cli("classify", "--model", str(exported["int8"]), "-f", "json",
                             str(tmp_path))
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["path"].rsplit("/", 1)[1] for r in rows] == names
    assert "error" in rows[7] and all("label" in r for i, r in enumerate(rows) if i != 7)
