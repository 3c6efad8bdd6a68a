"""Labelled sets, evaluation figures and --sort-into, on their own (no model, no torch)."""

import json
import os

import numpy as np
import pytest

from frameqc.runtime.errors import UsageError
from frameqc.runtime.lifecycle.evaluation import Evaluation
from frameqc.runtime.lifecycle.labelled import LabelledSet
from frameqc.runtime.output.folders import prepare_sort_dir, sort_into


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_per_label_recursive_and_sorted(tmp_path):
    for name in ("OK/b.fits", "OK/a.fits.gz", "OK/night2/c.fz", "Shutter/x.fits",
                 "Shutter/notes.txt", "Shutter/.hidden.fits", ".git/y.fits"):
        touch(tmp_path / name)
    data = LabelledSet.load(tmp_path, labels=("Shutter", "OK"))
    assert data.counts() == {"OK": 3, "Shutter": 1}
    assert [os.path.relpath(p, tmp_path) for p in data.paths] == [
        "OK/a.fits.gz", "OK/b.fits", "OK/night2/c.fz", "Shutter/x.fits"]


def test_unknown_label_is_named_with_its_count(tmp_path):
    touch(tmp_path / "OK/a.fits")
    touch(tmp_path / "Maybe/b.fits")
    touch(tmp_path / "Maybe/c.fits")
    with pytest.raises(UsageError, match=r"label 'Maybe' \(2 frames\) is not one of the "
                                         r"model's labels Shutter, OK"):
        LabelledSet.load(tmp_path, labels=("Shutter", "OK"))


def test_csv_relative_paths_header_and_comments(tmp_path):
    (tmp_path / "sets").mkdir()
    csv = tmp_path / "sets" / "frames.csv"
    csv.write_text("path,label\n# a comment\n../f/a.fits,OK\n/abs/b.fits, Shutter\n\n")
    data = LabelledSet.load(csv)
    assert data.items == (((tmp_path / "f" / "a.fits").as_posix(), "OK"),
                          ("/abs/b.fits", "Shutter"))


@pytest.mark.parametrize("text,match", [("a.fits\n", "expected 'path,label'"),
                                        ("a.fits,\n", "expected 'path,label'"),
                                        ("", "no labelled frames")])
def test_bad_csv_is_one_clear_error(tmp_path, text, match):
    csv = tmp_path / "f.csv"
    csv.write_text(text)
    with pytest.raises(UsageError, match=match):
        LabelledSet.load(csv)


def test_missing_source_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such labelled folder or CSV"):
        LabelledSet.load(tmp_path / "nowhere")


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    for i in range(30):
        touch(tmp_path / "OK" / f"{i:02d}.fits")
    for i in range(6):
        touch(tmp_path / "Shutter" / f"{i:02d}.fits")
    data = LabelledSet.load(tmp_path)
    rest, held = data.split(0.2, seed=3)
    assert held.counts() == {"OK": 6, "Shutter": 1} and rest.counts() == {"OK": 24, "Shutter": 5}
    assert not set(rest.paths) & set(held.paths)
    assert data.split(0.2, seed=3) == (rest, held)
    assert data.split(0.2, seed=4)[1] != held
    with pytest.raises(UsageError):
        data.split(1.0)


def test_digest_follows_files_and_labels_not_the_mount(tmp_path):
    for root in ("a", "b"):
        touch(tmp_path / root / "OK" / "x.fits")
        touch(tmp_path / root / "Shutter" / "y.fits")
    one, two = LabelledSet.load(tmp_path / "a"), LabelledSet.load(tmp_path / "b")
    assert one.digest() == two.digest()
    os.rename(tmp_path / "b" / "OK" / "x.fits", tmp_path / "b" / "Shutter" / "x.fits")
    assert LabelledSet.load(tmp_path / "b").digest() != one.digest()


def evaluation(truths, said, probs, alerts=("Shutter",), threshold=0.5):
    return Evaluation("m.onnx", "abc", "fp32", ("Shutter", "OK"), alerts, threshold,
                      list(truths), list(said), [list(p) for p in probs])


def test_figures_are_counts_over_decisions():
    ev = evaluation(["Shutter", "Shutter", "Shutter", "OK", "OK"],
                    ["Shutter", "OK", "Shutter", "Shutter", "OK"],
                    [(0.9, 0.1), (0.4, 0.6), (0.7, 0.3), (0.55, 0.45), (0.2, 0.8)])
    assert ev.n == 5 and ev.accuracy == pytest.approx(0.6)
    assert ev.confusion() == {"Shutter": {"Shutter": 2, "OK": 1}, "OK": {"Shutter": 1, "OK": 1}}
    per = ev.per_label()
    assert per["Shutter"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3,
                                            "f1": 2 / 3, "support": 3})
    assert per["OK"]["recall"] == 0.5 and per["OK"]["precision"] == 0.5
    d = ev.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert {"model", "n", "accuracy", "confusion", "per_label"} <= set(d)


def test_sweep_redecides_with_the_decision_rule_and_finds_the_best_threshold():
    # at 0.5 the OK frame at Shutter 0.55 is a false alarm; from 0.6 on it is gone
    ev = evaluation(["Shutter", "Shutter", "OK"], ["Shutter", "Shutter", "Shutter"],
                    [(0.9, 0.1), (0.7, 0.3), (0.55, 0.45)])
    rows = {r["threshold"]: r for r in ev.sweep()}
    assert min(rows) == 0.5  # two labels: below 1/2 nothing can change
    assert rows[0.5]["Shutter"]["precision"] == pytest.approx(2 / 3)
    assert rows[0.6]["Shutter"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0,
                                                  "support": 2})
    assert rows[0.8]["Shutter"]["recall"] == 0.5
    assert ev.best_threshold() == 0.6  # first of the equally good ones, nearest the card's


def test_no_alert_no_sweep():
    ev = evaluation(["OK"], ["OK"], [(0.2, 0.8)], alerts=())
    assert ev.best_threshold() is None and ev.to_dict()["sweep"] == []


def test_sort_into_links_each_decided_frame(tmp_path):
    frames = tmp_path / "in"
    a, b = touch(frames / "a.fits.gz"), touch(frames / "sub" / "a.fits.gz")
    out = tmp_path / "sorted"
    prepare_sort_dir(out, ("Shutter", "OK"))
    assert sort_into(out, {"path": str(a), "label": "OK"}) == str(out / "OK" / "a.fits.gz")
    assert sort_into(out, {"path": str(a), "label": "OK"}) == str(out / "OK" / "a.fits.gz")
    assert sort_into(out, {"path": str(b), "label": "OK"}) == str(out / "OK" / "a-1.fits.gz")
    assert sort_into(out, {"path": str(a), "error": "bad"}) is None
    assert os.readlink(out / "OK" / "a-1.fits.gz") == str(b)
    assert sorted(os.listdir(out)) == ["OK", "Shutter"]
    assert LabelledSet.load(out).counts() == {"OK": 2}


def test_sort_into_an_unwritable_place_is_a_usage_error(tmp_path):
    blocker = touch(tmp_path / "file")
    with pytest.raises(UsageError, match="--sort-into"):
        prepare_sort_dir(blocker / "x", ("OK",))


def test_classify_accepts_arrays_as_frames():
    from frameqc.runtime.data.reader import FITS, PNG, Frame
    from frameqc.runtime.errors import FrameError

    assert Frame.from_array(np.zeros((5, 5), np.uint16)).kind == FITS
    assert Frame.from_array(np.zeros((5, 5, 3), np.uint8)).kind == PNG
    with pytest.raises(FrameError, match="neither"):
        Frame.from_array(np.zeros((5, 5, 4), np.uint8))
