"""Decisions: probabilities -> one label, with the alert threshold of the model card."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The decided label, its output index and probability, and all probabilities."""

    label: str
    index: int
    probability: float
    probabilities: dict[str, float]


def decide(probabilities: Sequence[float], labels: Sequence[str],
           alerts: Sequence[str] = (), threshold: float = 0.5) -> Decision:
    """The top class, except that an alert label needs ``probability >= threshold``.

    An alert below threshold gives way to the most probable non-alert label, as the
    mirror-wobble server called "Wobble" only at 0.6 or more and "OK" otherwise.
    """
    probs = [float(p) for p in probabilities]
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} probabilities for {len(labels)} labels")
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    chosen = next((i for i in order if labels[i] not in alerts or probs[i] >= threshold),
                  order[0])
    return Decision(labels[chosen], chosen, probs[chosen], dict(zip(labels, probs, strict=True)))
