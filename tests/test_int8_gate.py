"""The int8 gate's rule: decisions away from the threshold decide, coin flips do not."""

import numpy as np
import pytest

from frameqc.export.onnx_export import judge_int8, near_decision
from frameqc.runtime.card import ModelCard

CARD = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",), threshold=0.5)


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


def test_record_goes_into_the_card():
    v = judge_int8(probs([0.1, 0.9]), probs([0.12, 0.88]), CARD)
    card = CARD.with_(quantization=v.record())
    assert ModelCard.from_metadata(card.to_metadata()).quantization["held_out"] == 2
