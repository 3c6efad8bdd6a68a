"""Decisions: probabilities -> one label, with the alert threshold of the model card.

The one owner of the decision rule (:func:`decide`) and of what makes a decision
doubtful (:func:`doubtful`): ``classify``, the server, ``evaluate``'s threshold sweep and
the int8 gate at export all call these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: How far probabilities may move before a decision is called doubtful, when the card
#: does not say (the int8 gate's default margin).
DEFAULT_MARGIN = 0.05


@dataclass(frozen=True)
class Decision:
    """The decided label, its output index and probability, and all probabilities.

    ``doubtful`` is True when the decision would change if the probabilities moved by
    the card's margin (see :func:`doubtful`).
    """

    label: str
    index: int
    probability: float
    probabilities: dict[str, float]
    doubtful: bool = False


def check_threshold(value: object, what: str = "threshold") -> float:
    """The one check of an alert threshold: a number in (0, 1]."""
    from frameqc.runtime.errors import UsageError

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what} must be a number, not {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise UsageError(f"{what} must be in (0, 1], not {value}")
    return float(value)


def _choose(probs: list[float], labels: Sequence[str], alerts: Sequence[str],
            threshold: float) -> int:
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    return next((i for i in order if labels[i] not in alerts or probs[i] >= threshold),
                order[0])


def doubtful(probabilities: Sequence[float], labels: Sequence[str], alerts: Sequence[str],
             threshold: float, margin: float = DEFAULT_MARGIN) -> bool:
    """Would the decision move if the probabilities moved by ``margin``?

    True when the two most probable labels are within ``2 * margin`` of each other, or
    when the alert threshold moved by ``margin`` either way changes the decision. The
    int8 gate sets such frames apart (a flip there is a coin toss); the night page and
    ``label --order uncertain`` show them first.
    """
    probs = [float(p) for p in probabilities]
    top = sorted(probs, reverse=True)
    if len(top) > 1 and top[0] - top[1] < 2 * margin:
        return True
    lo = _choose(probs, labels, alerts, max(threshold - margin, 1e-9))
    hi = _choose(probs, labels, alerts, min(threshold + margin, 1.0))
    return lo != hi


def decide(probabilities: Sequence[float], labels: Sequence[str],
           alerts: Sequence[str] = (), threshold: float = 0.5,
           margin: float = DEFAULT_MARGIN) -> Decision:
    """The top class, except that an alert label needs ``probability >= threshold``.

    An alert below threshold gives way to the most probable non-alert label, as the
    mirror-wobble server called "Wobble" only at 0.6 or more and "OK" otherwise.
    """
    probs = [float(p) for p in probabilities]
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} probabilities for {len(labels)} labels")
    chosen = _choose(probs, labels, alerts, threshold)
    return Decision(labels[chosen], chosen, probs[chosen], dict(zip(labels, probs, strict=True)),
                    doubtful(probs, labels, alerts, threshold, margin))


def check_overrides(binning: object, threshold: object) -> tuple[object, float | None]:
    """``--bin`` and ``--threshold`` (or a request's), checked: the card's when None."""
    from frameqc.runtime.model.card import parse_binning

    return (None if binning is None else parse_binning(binning),
            None if threshold is None else check_threshold(threshold))
