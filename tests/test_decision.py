import pytest

from frameqc.runtime.model.decision import decide

LABELS = ("Wobble", "OK")


def test_top_class_without_alerts():
    d = decide([0.3, 0.7], LABELS)
    assert (d.label, d.index, d.probability) == ("OK", 1, 0.7)
    assert d.probabilities == {"Wobble": 0.3, "OK": 0.7}


@pytest.mark.parametrize("p_wobble,label", [(0.59, "OK"), (0.6, "Wobble"), (0.95, "Wobble"),
                                            (0.2, "OK")])
def test_alert_needs_threshold(p_wobble, label):
    d = decide([p_wobble, 1 - p_wobble], LABELS, alerts=("Wobble",), threshold=0.6)
    assert d.label == label
    assert d.probability == pytest.approx(p_wobble if label == "Wobble" else 1 - p_wobble)


def test_alert_below_threshold_gives_best_non_alert():
    labels = ("Shutter", "Wobble", "OK", "Cloud")
    d = decide([0.5, 0.3, 0.05, 0.15], labels, alerts=("Shutter", "Wobble"), threshold=0.6)
    assert (d.label, d.index) == ("Cloud", 3)


def test_all_alerts_below_threshold_falls_back_to_top():
    d = decide([0.55, 0.45], ("A", "B"), alerts=("A", "B"), threshold=0.9)
    assert d.label == "A"


def test_length_mismatch():
    with pytest.raises(ValueError):
        decide([1.0], LABELS)
