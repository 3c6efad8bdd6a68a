"""``frameqc train`` reads the labels.csv that ``frameqc label`` writes (needs torch).

The command runs for real up to the training itself (its parser, card, output checks and
``LabelledSet.load(DATA, card.labels)``); the training is replaced by a recorder, so the
test takes seconds: training a vgg16 head is the train tests' business.
"""

from __future__ import annotations

import pytest

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import run_cli


def test_train_reads_what_label_writes(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import frameqc.export.train as train
    from frameqc.runtime.web.labelling import EXCLUDED, LabellingSession

    paths = []
    for k, kind in enumerate(["good", "shutter", "good", "shutter", "wobble"]):
        paths.append(str(tmp_path / f"f{k}.fits"))
        write_fits(paths[-1], make_frame(kind, 256, k))
    out = tmp_path / "labels.csv"
    session = LabellingSession(paths, out, ("Shutter", "OK"), ("Shutter",), 0.5,
                               "0123456789ab", "fp32", "tester")
    session.set_labels([(0, EXCLUDED)])  # labels need no decision to be excluded
    session.entries.update({i: _decided() for i in range(1, 5)})
    session.set_labels([(1, "Shutter"), (2, "OK"), (3, "Shutter"), (4, "OK")])

    seen = {}

    def recorder(data, val, val_fraction, init, card, out_path, cfg):
        seen.update(data=data, card=card)
        return {}, []

    monkeypatch.setattr(train, "train_model", recorder)
    code, _, err = run_cli("train", str(out), "--init", "imagenet", "--labels", "Shutter,OK",
                           "--alert", "Shutter", "-o", str(tmp_path / "new.pt"))
    assert code == 0, err
    assert sorted(seen["data"].items) == [(paths[1], "Shutter"), (paths[2], "OK"),
                                          (paths[3], "Shutter"), (paths[4], "OK")]


def _decided():
    from frameqc.runtime.web.labelling import Entry

    return Entry({"label": "OK", "probability": 0.6})
