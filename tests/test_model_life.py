"""The model's life end to end: label -> train -> evaluate old vs new -> report -> classify.

One labelled set of synthetic frames (shutter failures vs good), one training run from
the session's random-head weights, shared by every test here.
"""

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import LABELS, run_cli

torch = pytest.importorskip("torch")

KIND = {"Shutter": "shutter", "OK": "good"}
SIZE = 681  # binned 3x3 by --bin auto to 227, as a 2048 frame is binned 9x9


def make_set(root: Path, per_label: int, seed: int) -> Path:
    for label, kind in KIND.items():
        (root / label).mkdir(parents=True)
        for i in range(per_label):
            write_fits(root / label / f"{kind}_{seed + i}.fits",
                       make_frame(kind, SIZE, seed + i + (0 if kind == "good" else 50_000)))
    return root


@pytest.fixture(scope="session")
def labelled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("labelled")
    return {"train": make_set(root / "train", 40, 0), "test": make_set(root / "test", 20, 1000)}


@pytest.fixture(scope="session")
def trained(weights, labelled, tmp_path_factory) -> dict:
    """``frameqc train`` from the random-head weights, with --export."""
    out = tmp_path_factory.mktemp("trained")
    (out / "parent.toml").write_text(  # a production card, its notes about another model
        'labels = ["Shutter", "OK"]\nalerts = ["Shutter"]\n'
        'notes = "IO:O shutter classifier, 2022 retrain (production)"\n')
    code, stdout, stderr = run_cli(
        "train", str(labelled["train"]), "--init", str(weights), "--card",
        str(out / "parent.toml"), "--epochs", "20", "--seed", "0", "-o", str(out / "new.pt"),
        "--export", str(out / "new.onnx"))
    assert code == 0, stderr
    return {"pt": out / "new.pt", "onnx": out / "new.onnx", "stdout": stdout,
            "stderr": stderr}


def evaluate_json(*args: str) -> list[dict]:
    code, out, err = run_cli("evaluate", "--format", "json", *args)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_trained_model_beats_its_init_on_held_out_frames(exported, trained, labelled):
    old, new = evaluate_json("-m", str(exported["fp32"]), "-m", str(trained["onnx"]),
                             str(labelled["test"]))
    assert old["n"] == new["n"] == 40
    assert new["accuracy"] >= 0.9, new
    assert new["accuracy"] > old["accuracy"], (old["accuracy"], new["accuracy"])
    assert new["per_label"]["Shutter"]["recall"] >= 0.9


def test_evaluate_figures_are_a_count_over_classify(exported, trained, labelled):
    paths = sorted(str(p) for p in Path(labelled["test"]).rglob("*.fits"))
    truth = {p: Path(p).parent.name for p in paths}
    for model in (exported["fp32"], trained["onnx"]):
        [ev] = evaluate_json("-m", str(model), str(labelled["test"]))
        code, out, err = run_cli("classify", "--model", str(model), "--format", "json", *paths)
        assert code == 0, err
        said = {r["path"]: r["label"] for r in map(json.loads, out.splitlines())}
        confusion = Counter((truth[p], said[p]) for p in paths)
        assert ev["confusion"] == {t: {s: confusion[t, s] for s in LABELS} for t in LABELS}
        assert ev["accuracy"] == sum(truth[p] == said[p] for p in paths) / len(paths)
        for label in LABELS:
            tp = confusion[label, label]
            assert ev["per_label"][label]["recall"] == tp / sum(
                confusion[label, s] for s in LABELS)


def test_training_is_recorded_in_the_card(weights, trained, labelled):
    import hashlib

    code, out, _ = run_cli("info", "--json", str(trained["onnx"]))
    assert code == 0
    card = json.loads(out)
    t = card["training"]
    assert t["parent_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert t["data_counts"] == {"OK": 32, "Shutter": 32}  # 20% held out for validation
    assert t["val_counts"] == {"OK": 8, "Shutter": 8}
    assert len(t["data_sha256"]) == 64 and t["seed"] == 0 and t["tune"] == "head"
    assert 1 <= t["best_epoch"] <= t["epochs"] == 20
    assert 0.0 <= t["validation"]["accuracy"] <= 1.0
    assert card["weights_sha256"] == hashlib.sha256(trained["pt"].read_bytes()).hexdigest()
    assert card["labels"] == list(LABELS) and card["alerts"] == ["Shutter"]
    assert "2022" not in card["notes"] and card["notes"].startswith(
        f"trained by frameqc train {t['trained_at']}: head tuned from {weights.name} on 64 "
        "frames")
    assert "best epoch" in trained["stderr"] and "epoch   1" in trained["stderr"]


def test_new_weights_load_into_the_seeds_network(weights, trained):
    """Same keys and shapes as the weights it started from: the seed's app_ml.py loads it."""
    from seed_reference import seed_network

    old = torch.load(weights, weights_only=True)
    new = torch.load(trained["pt"], weights_only=True)
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in old.items()}
    seed_network(new, len(LABELS))  # load_state_dict(strict=True) inside
    changed = [k for k in new if not torch.equal(new[k], old[k])]
    assert changed and all(k.startswith("classifier.6.") for k in changed)


def test_training_is_deterministic_and_a_new_label_count_replaces_the_last_layer(
        weights, tmp_path):
    data = tmp_path / "three"
    for label, kind in (("OK", "good"), ("Shutter", "shutter"), ("Wobble", "wobble")):
        (data / label).mkdir(parents=True)
        for i in range(4):
            write_fits(data / label / f"{i}.fits", make_frame(kind, SIZE, 70 + i))
    outs = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.pt"
        code, _, err = run_cli("train", str(data), "--init", str(weights), "--labels",
                               "OK,Shutter,Wobble", "--epochs", "3", "--seed", "5",
                               "--val-fraction", "0.25", "-o", str(out))
        assert code == 0, err
        assert "has 2 outputs and 3 labels were given" in err
        outs.append(torch.load(out, weights_only=True))
    assert outs[0]["classifier.6.3.weight"].shape == (3, 256)
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


@pytest.mark.parametrize("argv,match", [
    (["--labels", "Shutter,OK"], "no such labelled folder"),
    (["--labels", "A,B"], "is not one of the model's labels A, B"),
    (["--labels", "Shutter,OK", "--int8"], "--int8 goes with --export"),
])
def test_train_refuses_bad_requests_in_one_line(weights, labelled, tmp_path, argv, match):
    data = str(tmp_path / "nowhere") if "no such" in match else str(labelled["test"])
    code, _, err = run_cli("train", data, "--init", str(weights), "-o",
                             str(tmp_path / "x.pt"), *argv)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_sort_into_then_evaluate_is_a_perfect_score(exported, labelled, tmp_path):
    """A model evaluated on its own sorting agrees with itself: what sort-into promises."""
    sorted_dir = tmp_path / "sorted"
    code, _, err = run_cli("classify", "--model", str(exported["fp32"]), "--sort-into",
                           str(sorted_dir), str(labelled["test"] / "OK"),
                           str(labelled["test"] / "Shutter"))
    assert code == 0, err
    [ev] = evaluate_json("-m", str(exported["fp32"]), str(sorted_dir))
    assert ev["n"] == 40 and ev["accuracy"] == 1.0
    links = list(sorted_dir.rglob("*.fits"))
    assert all(p.is_symlink() and os.path.isabs(os.readlink(p)) for p in links)


@pytest.mark.browser
def test_report_is_a_static_page_a_browser_renders(exported, trained, labelled, tmp_path):
    report = tmp_path / "report"
    code, out, err = run_cli("evaluate", "-m", str(exported["fp32"]), "-m", str(trained["onnx"]),
                             str(labelled["test"]), "--report", str(report))
    assert code == 0, err
    assert "accuracy" in out and "confusion" in out
    page = (report / "index.html").read_text()
    images = [report / src for src in
              __import__("re").findall(r'<img src="([^"]+)"', page)]
    assert report / "threshold.png" in images
    assert len(images) > 1 and all(p.is_file() for p in images)  # the init model's mistakes
    assert "http" not in page.replace("http-equiv", "")  # opens from disk, offline
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must render the report in chromium (apt-get install chromium)")
        pytest.skip("no chromium here to render the report")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1200,2000", f"--screenshot={shot}",
                    (report / "index.html").as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (2000, 1200)
    assert img.std() > 20  # a rendered page with tables, a plot and images, not a blank


def test_python_api_classifies_paths_and_arrays_alike(exported, labelled):
    from astropy.io import fits

    from frameqc.runtime import Classifier, LabelledSet, evaluate

    clf = Classifier.load(exported["fp32"])
    path = sorted((labelled["test"] / "Shutter").iterdir())[0]
    by_path = clf.classify(path)
    by_array = clf.classify(fits.getdata(path))
    assert by_path.path == str(path) and by_array.path == "-"
    assert by_path.decision == by_array.decision
    ev = evaluate(clf, LabelledSet.load(labelled["test"]))
    assert ev.n == 40 and ev.to_dict()["n"] == 40
