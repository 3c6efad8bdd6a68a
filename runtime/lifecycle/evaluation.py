"""How good a model is on labelled frames: the figures ``frameqc evaluate`` prints.

Every figure is a count over the decisions :class:`~frameqc.runtime.engine.pipeline.Classifier`
makes, the code ``frameqc classify`` runs, so an evaluation says exactly what the model
would have decided in production. The threshold sweep re-decides the same probabilities
with :func:`~frameqc.runtime.model.decision.decide` at other thresholds: what
``classify --threshold T`` would have said.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from frameqc.runtime.engine.pipeline import Classifier
from frameqc.runtime.lifecycle.labelled import LabelledSet
from frameqc.runtime.model.decision import decide

#: Thresholds the alert sweep tries (the card's own is added).
SWEEP = (*(round(0.05 * i, 2) for i in range(1, 20)), 0.97, 0.99)


@dataclass
class Mistake:
    """A frame decided wrongly, with the 224x224 image the network saw."""

    path: str
    truth: str
    said: str
    probabilities: dict[str, float]
    preview: np.ndarray
    doubtful: bool = False


@dataclass
class Evaluation:
    """One model's decisions on a labelled set, and the figures drawn from them.

    Frames that could not be read or prepared are listed in ``failed`` and counted
    nowhere else, as ``classify`` gives them no decision.
    """

    model: str
    model_id: str
    precision: str
    labels: tuple[str, ...]
    alerts: tuple[str, ...]
    threshold: float
    truths: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    doubtful: list[bool] = field(default_factory=list)  # the record's flag, frame by frame
    paths: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)  # the card's, to show frames as it saw them
    input_size: int = 224

    @property
    def n(self) -> int:
        return len(self.truths)

    @property
    def accuracy(self) -> float:
        return _ratio(sum(t == s for t, s in zip(self.truths, self.said, strict=True)), self.n)

    def confusion(self) -> dict[str, dict[str, int]]:
        """True label -> decided label -> frames, every label present (zeros included)."""
        table = {t: dict.fromkeys(self.labels, 0) for t in self.labels}
        for t, s in zip(self.truths, self.said, strict=True):
            table[t][s] += 1
        return table

    def per_label(self) -> dict[str, dict[str, float]]:
        """Precision, recall, F1 and support (true frames) of each label."""
        return {label: _prf(self.truths, self.said, label) for label in self.labels}

    def sweep(self) -> list[dict]:
        """Each alert label's precision and recall as the threshold moves.

        Thresholds below 1/labels are left out: the top class always reaches that, so
        they decide as 1/labels does.
        """
        rows = []
        floor = 1.0 / len(self.labels)
        for t in sorted({*(t for t in SWEEP if t >= floor), self.threshold}):
            said = [decide(p, self.labels, self.alerts, t).label for p in self.probabilities]
            rows.append({"threshold": t, "accuracy": _ratio(
                sum(a == b for a, b in zip(self.truths, said, strict=True)), self.n),
                **{a: _prf(self.truths, said, a) for a in self.alerts}})
        return rows

    def best_threshold(self, rows: list[dict] | None = None) -> float | None:
        """The swept threshold with the best mean F1 over the alert labels.

        Ties go to the threshold nearest the card's, so the advice moves only for a gain.
        """
        if not self.alerts or not self.n:
            return None
        rows = self.sweep() if rows is None else rows
        return max(rows, key=lambda r: (round(np.mean([r[a]["f1"] for a in self.alerts]), 9),
                                        -abs(r["threshold"] - self.threshold)))["threshold"]

    def to_dict(self) -> dict:
        """The JSON form ``frameqc evaluate --format json`` prints, one object per model."""
        rows = self.sweep() if self.alerts else []
        return {"model": self.model, "model_id": self.model_id, "precision": self.precision,
                "labels": list(self.labels), "n": self.n, "accuracy": self.accuracy,
                "counts": {t: sum(1 for x in self.truths if x == t) for t in self.labels},
                "confusion": self.confusion(), "per_label": self.per_label(),
                "alerts": list(self.alerts), "threshold": self.threshold,
                "sweep": rows, "best_threshold": self.best_threshold(rows) if rows else None,
                "doubtful": sum(self.doubtful),
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


def evaluate(classifier: Classifier, data: LabelledSet, keep_mistakes: int = 0,
             name: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Classify every frame of ``data`` and compare with its label.

    Parameters
    ----------
    classifier : Classifier
        The model with its card's recipe and threshold (or overrides).
    data : LabelledSet
        Its labels must all be among the model's.
    keep_mistakes : int
        Keep the prepared image of up to this many wrongly decided frames (for a report).
    name : str, optional
        How the model is named in the figures (default: its path).
    progress : callable, optional
        Called with (frames done, frames in all) after each frame.
    """
    card = classifier.card
    data.check_labels(card.labels)
    ev = Evaluation(name or str(classifier.wait_model().path), card.model_id, card.precision,
                    card.labels, card.alerts, classifier.threshold, recipe=card.recipe,
                    input_size=card.input_size)
    results = classifier.run(data.paths)
    for done, (result, truth) in enumerate(zip(results, data.truths, strict=True), 1):
        if result.decision is None:
            ev.failed.append((result.path, result.error or "failed"))
        else:
            d = result.decision
            ev.paths.append(result.path)
            ev.truths.append(truth)
            ev.said.append(d.label)
            ev.probabilities.append([d.probabilities[k] for k in card.labels])
            ev.doubtful.append(d.doubtful)
            if d.label != truth and len(ev.mistakes) < keep_mistakes:
                ev.mistakes.append(Mistake(result.path, truth, d.label, dict(d.probabilities),
                                           result.prepared.preview(), d.doubtful))
        result.prepared = None  # the tensors are not kept: memory stays flat
        if progress:
            progress(done, len(data))
    return ev


def _ratio(a: float, b: float) -> float:
    return float(a) / b if b else 0.0


def _prf(truths: Sequence[str], said: Sequence[str], label: str) -> dict[str, float]:
    tp = sum(1 for t, s in zip(truths, said, strict=True) if t == label and s == label)
    predicted = sum(1 for s in said if s == label)
    support = sum(1 for t in truths if t == label)
    p, r = _ratio(tp, predicted), _ratio(tp, support)
    return {"precision": p, "recall": r, "f1": _ratio(2 * p * r, p + r), "support": support}


# -- text ------------------------------------------------------------------------------

def format_text(evaluations: Sequence[Evaluation]) -> str:
    """Models side by side, then each one's per-label figures, confusion and sweep."""
    data = evaluations[0]
    counts = ", ".join(f"{t} {sum(1 for x in data.truths if x == t)}" for t in data.labels)
    lines = [f"{data.n} labelled frames ({counts})", ""]
    head = ["model", "weights", "frames", "failed", "accuracy", "doubtful"]
    alerts = sorted({a for e in evaluations for a in e.alerts})
    for a in alerts:
        head += [f"{a} precision", f"{a} recall"]
    head += ["threshold", "best threshold"]
    rows = []
    for e in evaluations:
        per = e.per_label()
        row = [e.model, e.precision, str(e.n), str(len(e.failed)), f"{e.accuracy:.3f}",
               str(sum(e.doubtful))]
        for a in alerts:
            row += ([f"{per[a]['precision']:.3f}", f"{per[a]['recall']:.3f}"] if a in per
                    else ["-", "-"])
        best = e.best_threshold()
        row += [f"{e.threshold:g}", "-" if best is None else f"{best:g}"]
        rows.append(row)
    lines += _table(head, rows)
    for e in evaluations:
        lines += ["", f"== {e.model} ({e.precision}, model {e.model_id or '-'})", ""]
        per = e.per_label()
        lines += _table(["label", "frames", "precision", "recall", "F1"],
                        [[k, str(v["support"]), f"{v['precision']:.3f}", f"{v['recall']:.3f}",
                          f"{v['f1']:.3f}"] for k, v in per.items()])
        lines += ["", "confusion (rows: true label, columns: decided)"]
        conf = e.confusion()
        lines += _table(["", *e.labels], [[t, *(str(conf[t][s]) for s in e.labels)]
                                          for t in e.labels])
        if e.alerts and e.n:
            lines += ["", "alert threshold sweep (what classify --threshold T would decide)"]
            sweep = e.sweep()
            cols = ["threshold", "accuracy"]
            for a in e.alerts:
                cols += [f"{a} precision", f"{a} recall", f"{a} F1"]
            best = e.best_threshold(sweep)
            body = []
            for r in sweep:
                mark = " (card)" if r["threshold"] == e.threshold else ""
                mark += " (best)" if r["threshold"] == best else ""
                row = [f"{r['threshold']:g}{mark}", f"{r['accuracy']:.3f}"]
                for a in e.alerts:
                    row += [f"{r[a]['precision']:.3f}", f"{r[a]['recall']:.3f}",
                            f"{r[a]['f1']:.3f}"]
                body.append(row)
            lines += _table(cols, body)
        for path, error in e.failed:
            lines.append(f"not classified: {path}: {error}")
    return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in
                      enumerate(zip(r, widths, strict=True))).rstrip() for r in [head, *rows]]
