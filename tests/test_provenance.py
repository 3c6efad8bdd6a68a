"""Issue 17, what a model says about itself: its card read wherever it sits in the file,
a data digest that depends on the frames alone, a trained model's own notes, and an int8
verdict that says what was judged. No torch."""

import builtins
import os

import numpy as np
import pytest

from frameqc.export.commands import trained_card
from frameqc.export.onnx_export import judge_int8
from frameqc.runtime.lifecycle.labelled import LabelledSet
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.peek import read_card

CARD = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",), threshold=0.5)


# -- the card of a single-file model ------------------------------------------------------

@pytest.fixture(scope="module")
def single_file_model(tmp_path_factory):
    """An int8-carded model saved as one file (weights inside, 18 MiB), as onnx.save does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((3 * 224 * 224, 30), np.float32) * 1e-3,
                                 "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((30, 2), np.float32), "w2")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w1"], ["hidden"]),
         helper.make_node("MatMul", ["hidden", "w2"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "single", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                 ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [w1, w2, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    card = CARD.with_(precision="int8", weights_sha256="ab" * 32)
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    path = tmp_path_factory.mktemp("single") / "single.onnx"
    onnx.save(model, path)  # one file: the graph, its weights, then the metadata
    assert path.stat().st_size > 16 << 20 and not path.with_name("single.onnx.data").exists()
    return path


def test_the_card_of_a_single_file_model_is_read_after_its_weights(single_file_model,
                                                                     monkeypatch):
    read = []
    real_open = builtins.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def read(self, n=-1):
            data = self.fh.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr("frameqc.runtime.model.peek.open",
                        lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    card = read_card(single_file_model)
    assert card is not None and card.precision == "int8" and card.labels == CARD.labels
    assert sum(read) < 64 << 10, f"read {sum(read)} bytes of the model to find its card"


def test_a_single_file_int8_model_is_prepacked_as_int8(single_file_model, monkeypatch):
    from frameqc.runtime.model.session import Model

    monkeypatch.delenv("FRAMEQC_PREPACK", raising=False)
    model = Model(single_file_model)  # resident: int8 prepacks, fp32 would not
    assert model.prepacked is True and model.card.precision == "int8"


def test_a_truncated_or_foreign_file_has_no_card(single_file_model, tmp_path):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(single_file_model.read_bytes()[: 17 << 20])  # inside the graph
    assert read_card(cut) is None
    assert read_card(__file__) is None
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert read_card(tmp_path / "empty.onnx") is None


# -- the data digest --------------------------------------------------------------------

def make_labelled(root):
    for name, body in (("OK/a.fits", b"aa"), ("OK/night/b.fits", b"bbb"),
                       ("Shutter/c.fits", b"c")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)


def test_digest_depends_on_the_frames_not_on_how_the_root_was_named(tmp_path, monkeypatch):
    make_labelled(tmp_path / "site1" / "labelled")
    make_labelled(tmp_path / "site2" / "deep" / "copy")
    (tmp_path / "site1" / "labels.csv").write_text(
        "path,label\nlabelled/OK/a.fits,OK\nlabelled/OK/night/b.fits,OK\n"
        "labelled/Shutter/c.fits,Shutter\n")
    monkeypatch.chdir(tmp_path / "site1")
    digests = {
        "relative": LabelledSet.load("labelled").digest(),
        "dot": LabelledSet.load("./labelled/").digest(),
        "absolute": LabelledSet.load(tmp_path / "site1" / "labelled").digest(),
        "elsewhere": LabelledSet.load(tmp_path / "site2" / "deep" / "copy").digest(),
    }
    assert len(set(digests.values())) == 1, digests
    csv = {"relative csv": LabelledSet.load("labels.csv").digest(),
           "absolute csv": LabelledSet.load(tmp_path / "site1" / "labels.csv").digest()}
    assert len(set(csv.values())) == 1, csv
    monkeypatch.chdir(tmp_path)
    assert LabelledSet.load("site1/labelled").digest() == digests["relative"]
    (tmp_path / "site1" / "labelled" / "OK" / "a.fits").write_bytes(b"a changed frame")
    assert LabelledSet.load("site1/labelled").digest() != digests["relative"]
    os.rename(tmp_path / "site2/deep/copy/OK/a.fits", tmp_path / "site2/deep/copy/Shutter/a.fits")
    assert LabelledSet.load(tmp_path / "site2/deep/copy").digest() != digests["elsewhere"]


# -- a trained model's card ------------------------------------------------------------

def test_a_trained_model_does_not_inherit_its_parent_card_s_notes():
    parent = CARD.with_(notes="IO:O shutter classifier, 2022 retrain (production)")
    record = {"parent": "vgg16-transfer-touse2.pt", "tune": "head",
              "data_counts": {"OK": 32, "Shutter": 32}, "best_epoch": 7, "epochs": 20,
              "validation": {"accuracy": 0.9375}, "trained_at": "2026-11-26T01:00:00Z"}
    card = trained_card(parent, record)
    assert "2022" not in card.notes and "production" not in card.notes
    assert card.notes == ("trained by frameqc train 2026-11-26T01:00:00Z: head tuned from "
                          "vgg16-transfer-touse2.pt on 64 frames, validation accuracy 0.938 "
                          "(epoch 7 of 20)")
    assert card.training == record and card.labels == parent.labels


# -- the int8 verdict ------------------------------------------------------------------

def probs(shutter) -> np.ndarray:
    p = np.array(shutter, np.float32)
    return np.stack([p, 1 - p], axis=1)


def test_int8_verdict_with_every_frame_near_the_threshold_says_what_was_judged():
    fp32 = probs(np.linspace(0.48, 0.52, 64))
    v = judge_int8(fp32, probs(np.linspace(0.48, 0.52, 64) + 0.01), CARD)
    line = v.line()
    assert "0.0%" not in line and "of 0 " not in line
    assert ("n=64, no frame is away from the threshold, so int8 was judged by its "
            "probabilities alone (max |dp| 0.0100 <= 0.05); 64 within +-0.05 of the "
            "threshold") in line
    advice = CARD.with_(precision="int8", quantization=v.record()).advice()
    assert "0.0%" not in advice and "judged by probabilities alone (all 64" in advice
    judged = judge_int8(probs([0.1, 0.9]), probs([0.12, 0.88]), CARD)
    assert "decisions agree on 100.0% of 2 away from the threshold; 0 within" in judged.line()
