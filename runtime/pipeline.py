"""The classification pipeline: paths -> frames -> tensors -> probabilities -> decisions.

Frames of the next batch are read and prepared in a worker thread while the current
batch runs through the network (numpy, astropy I/O and onnxruntime release the GIL).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from .card import Binning
from .decision import Decision, decide
from .errors import FrameError
from .frames import Source, read_frame
from .model import Model
from .recipes import Prepared, Recipe, make_recipe


@dataclass
class Result:
    """One frame's outcome: a decision, or the one-line reason it has none."""

    path: str
    decision: Decision | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prepared: Prepared | None = None

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())


def prepare(source: Source, recipe: Recipe) -> Prepared:
    """Read and prepare one frame, timing each step."""
    t0 = time.perf_counter()
    frame = read_frame(source)
    read_s = time.perf_counter() - t0
    prepared = recipe.prepare(frame)
    prepared.timings = {"read": read_s, **prepared.timings}
    return prepared


class Classifier:
    """A model with its card's recipe and decision rule: what every command runs.

    ``binning`` and ``threshold`` override the card's, as ``--bin`` and ``--threshold`` do.
    """

    def __init__(self, model: Model, binning: Binning | None = None,
                 threshold: float | None = None) -> None:
        card = model.card
        self.model = model
        self.recipe = make_recipe(card.recipe, card.input_size, binning)
        self.threshold = card.threshold if threshold is None else threshold

    def _prepare_all(self, sources: list[tuple[str, Source]]) -> list[Result]:
        out = []
        for name, source in sources:
            try:
                prepared = prepare(source, self.recipe)
                out.append(Result(name, timings=dict(prepared.timings), prepared=prepared))
            except FrameError as exc:
                out.append(Result(name, error=str(exc)))
            except MemoryError:
                out.append(Result(name, error="frame too large for memory"))
        return out

    def _infer(self, results: list[Result]) -> list[Result]:
        ready = [r for r in results if r.prepared is not None]
        if ready:
            t0 = time.perf_counter()
            probs = self.model.predict(np.stack([r.prepared.tensor for r in ready]))
            each = (time.perf_counter() - t0) / len(ready)
            card = self.model.card
            for r, p in zip(ready, probs):
                r.decision = decide(p, card.labels, card.alerts, self.threshold)
                r.timings["infer"] = each
        return results

    def run(self, sources: Iterable[tuple[str, Source]], batch_size: int = 8) -> Iterator[Result]:
        """Classify ``(name, path-or-bytes)`` pairs, yielding results in order."""
        it = iter(sources)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._prepare_all, list(islice(it, batch_size)))
            while True:
                results = pending.result()
                if not results:
                    return
                pending = pool.submit(self._prepare_all, list(islice(it, batch_size)))
                yield from self._infer(results)

    def classify(self, source: Source, name: str = "-") -> Result:
        """One frame, synchronously."""
        return self._infer(self._prepare_all([(name, source)]))[0]
