"""The int8 gate's rule: decisions away from the threshold decide, coin flips do not."""

import numpy as np
import pytest

from frameqc.export.onnx_export import judge_int8
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.decision import doubtful

CARD = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",), threshold=0.5)


def near_decision(p, card, margin):
    """The int8 gate's near-threshold rule is the record's ``doubtful``."""
    return doubtful(p, card.labels, card.alerts, card.threshold, margin)


def probs(shutter: list[float]) -> np.ndarray:
    p = np.array(shutter, np.float32)
    return np.stack([p, 1 - p], axis=1)


def test_a_flip_at_the_threshold_alone_is_not_a_fault():
    """The case that refused a good int8 model: one frame at p = 0.5025 flipped."""
    fp32 = probs([0.5025, *np.linspace(0.02, 0.3, 30), *np.linspace(0.7, 0.98, 30)])
    int8 = fp32.copy()
    int8[0] = [0.4990, 0.5010]  # the coin flip
    int8[1:] = probs(fp32[1:, 0] + 0.002)  # small moves elsewhere
    v = judge_int8(fp32, int8, CARD)
    assert v.n == 61 and v.near == 1 and v.near_flips == 1 and v.judged == 60
    assert v.agreement == 1.0 and v.worst == 0 and v.max_dp == pytest.approx(0.0035, abs=1e-4)


def test_real_disagreement_is_counted():
    fp32 = probs(np.linspace(0.05, 0.95, 64))
    int8 = probs(np.full(64, 0.9))  # a broken model: always Shutter
    v = judge_int8(fp32, int8, CARD)
    assert v.agreement < 0.6 and v.judged >= 56


def test_near_means_the_decision_would_move():
    wobble = ModelCard(labels=("Wobble", "OK"), alerts=("Wobble",), threshold=0.6)
    assert near_decision(np.array([0.62, 0.38]), wobble, 0.05)  # by the 0.6 threshold
    assert not near_decision(np.array([0.52, 0.48]), wobble, 0.0)
    assert near_decision(np.array([0.52, 0.48]), wobble, 0.05)  # nearly tied
    assert not near_decision(np.array([0.75, 0.25]), wobble, 0.05)
    assert not near_decision(np.array([0.30, 0.70]), wobble, 0.05)


@pytest.mark.parametrize("card", [
    CARD,
    ModelCard(labels=("Wobble", "OK"), alerts=("Wobble",), threshold=0.6, margin=0.08),
    ModelCard(labels=("OK", "Shutter", "Wobble"), alerts=("Shutter", "Wobble"), threshold=0.7,
              margin=0.03),
], ids=["shutter", "wobble-0.6", "three-labels"])
def test_the_record_flags_doubtful_what_the_gate_sets_apart(card):
    """The record's ``doubtful`` is the gate's near-threshold verdict, frame by frame."""
    from frameqc.runtime.engine.pipeline import Result
    from frameqc.runtime.model.decision import decide
    from frameqc.runtime.output.record import record

    rng = np.random.default_rng(7)
    p = rng.dirichlet(np.full(len(card.labels), 0.6), 500)
    flags = [record(Result("f.fits", decide(x, card.labels, card.alerts, card.threshold,
                                            card.margin)), card)["doubtful"] for x in p]
    assert flags == [near_decision(x, card, card.margin) for x in p]
    flipped = p[:, ::-1].copy()  # int8 that says the opposite of every frame
    v = judge_int8(p, flipped, card, card.margin)
    assert 0 < v.near == sum(flags) < len(p)


def test_classify_flags_doubtful_what_the_gate_sets_apart(runtime_model, fits_dir):
    """End to end: the records of a real run, judged by the gate on their own probabilities."""
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.output.record import record

    clf = Classifier.load(runtime_model["fp32"], threads=1)
    card = clf.card
    recs = [record(r, card) for r in clf.run(sorted(map(str, fits_dir.iterdir())))]
    recs = [r for r in recs if "error" not in r]
    probs = np.array([[r["probabilities"][k] for k in card.labels] for r in recs])
    assert len(recs) >= 8
    assert [r["doubtful"] for r in recs] == [near_decision(x, card, card.margin) for x in probs]
    assert judge_int8(probs, probs, card, card.margin).near == sum(r["doubtful"] for r in recs)


def test_record_goes_into_the_card():
    v = judge_int8(probs([0.1, 0.9]), probs([0.12, 0.88]), CARD)
    card = CARD.with_(quantization=v.record())
    assert ModelCard.from_metadata(card.to_metadata()).quantization["held_out"] == 2


def test_a_model_unsure_of_every_frame_is_judged_by_its_probabilities():
    fp32 = probs(np.linspace(0.48, 0.52, 64))  # random weights: every frame a coin flip
    close = judge_int8(fp32, probs(np.linspace(0.48, 0.52, 64) + 0.01), CARD)
    far = judge_int8(fp32, probs(np.linspace(0.48, 0.52, 64) + 0.2), CARD)
    assert close.judged == far.judged == 0
    assert close.passes(0.95) and not far.passes(0.95)


# -- session options by kind of work ---------------------------------------------------------

@pytest.mark.parametrize("precision,expected", [("fp32", False), ("int8", True)])
def test_prepacking_follows_the_model_alone(monkeypatch, precision, expected):
    from frameqc.runtime.model.session import want_prepack

    monkeypatch.delenv("FRAMEQC_PREPACK", raising=False)
    assert want_prepack(precision) is expected
    monkeypatch.setenv("FRAMEQC_PREPACK", "on")
    assert want_prepack(precision) is True
    monkeypatch.setenv("FRAMEQC_PREPACK", "off")
    assert want_prepack(precision) is False


def test_the_card_is_read_without_a_session(runtime_model, monkeypatch):
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.session import Model

    card = read_card(runtime_model["int8"])
    assert card.precision == "int8" and card.labels == ("Shutter", "OK")
    assert read_card(__file__) is None
    monkeypatch.delenv("FRAMEQC_PREPACK", raising=False)
    assert Model(runtime_model["int8"]).prepacked is True
    assert Model(runtime_model["fp32"]).prepacked is False
