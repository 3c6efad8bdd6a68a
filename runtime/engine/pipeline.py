"""The classification pipeline: paths -> frames -> tensors -> probabilities -> decisions.

Frames of the next batch are read and prepared in a worker thread while the current
batch runs through the network (numpy, astropy I/O and onnxruntime release the GIL).
Frames of different sizes (JPEGs for a model of any input size) cannot share a network
batch: they are grouped by size, in groups of at most BATCH_PIXELS pixels (a larger frame
alone), and their results come back in input order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from frameqc.runtime.data.reader import Frame, Source, read_frame
from frameqc.runtime.errors import FrameError, FrameQCError
from frameqc.runtime.model import import_onnxruntime
from frameqc.runtime.model.card import Binning, ModelCard
from frameqc.runtime.model.decision import Decision, check_overrides, decide
from frameqc.runtime.model.engines import AUTO, refusal, resolve_engine
from frameqc.runtime.model.engines.choice import pick
from frameqc.runtime.model.engines.cpuflags import cpu_flags
from frameqc.runtime.model.engines.openvino import import_openvino
from frameqc.runtime.model.peek import read_card
from frameqc.runtime.model.recipes import Prepared, Recipe, recipe_for
from frameqc.runtime.model.session import Model
from frameqc.runtime.util.text import first_line

#: Pixels one network batch may hold: eight 224x224 frames, as many of one size as fit
#: (vgg16's activations grow with pixels, not frames; a frame larger than this runs alone).
BATCH_PIXELS = 8 * 224 * 224


@dataclass
class Result:
    """One frame's outcome: a decision, or the one-line reason it has none."""

    path: str
    decision: Decision | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    prepared: Prepared | None = field(default=None, repr=False)
    date_obs: str | None = None  # the frame's DATE-OBS, when its header has one
    engine: str | None = None  # the engine that computed the probabilities

    @property
    def seconds(self) -> float:
        return sum(self.timings.values())

    def __repr__(self) -> str:
        said = (f"{self.decision.label} {self.decision.probability:.3f}" if self.decision
                else f"error={self.error!r}")
        return f"Result({self.path!r}, {said}, {self.seconds:.3f} s)"


def prepare(source: Source, recipe: Recipe) -> Prepared:
    """Read and prepare one frame, timing each step."""
    t0 = time.perf_counter()
    frame = read_frame(source)
    read_s = time.perf_counter() - t0
    prepared = recipe.prepare(frame)
    prepared.timings = {"read": read_s, **prepared.timings}
    prepared.date_obs = frame.date_obs
    return prepared


class Classifier:
    """A model with its card's recipe and decision rule: what every command runs.

    ``binning`` and ``threshold`` override the card's, as ``--bin`` and ``--threshold`` do.

    Examples
    --------
    >>> clf = Classifier.load("touse2.onnx")
    >>> clf.classify("h_e_20250708_1_1_1_1.fits").decision.label
    'OK'
    >>> [r.decision.label for r in clf.run(paths)]  # batches, read-ahead, in order
    """

    def __init__(self, model: Model | Future[Model], binning: Binning | None = None,
                 threshold: float | None = None, card: ModelCard | None = None) -> None:
        self._model, card = (None, card) if isinstance(model, Future) else (model, model.card)
        self._loading = model if isinstance(model, Future) else None
        self.card: ModelCard = card  # known before the session is built
        binning, threshold = check_overrides(binning, threshold)
        self.recipe = recipe_for(card, binning)
        self.threshold = card.threshold if threshold is None else threshold

    def wait_model(self) -> Model:
        """The model, waiting for a session still being built (:meth:`load`); a model
        that cannot load raises its error here."""
        if self._model is None:
            self._model = self._loading.result()
        return self._model

    @classmethod
    def load(cls, path: str | os.PathLike, threads: int | None = None,
             binning: Binning | None = None, threshold: float | None = None,
             cold: bool = False) -> Classifier:
        """Load an exported model (``.onnx`` beside its ``.onnx.data``) and its card.

        The card is read from the file first, once (the session is handed it), and the
        session is built in a thread while the first frames are read and prepared
        (onnxruntime releases the GIL while it builds): a cold one-shot pays for the
        longer of the two, not their sum. The engines that may run it are imported before
        the thread starts (modules imported from two threads at once can fail
        half-initialised), and a model no engine here can run is said before any frame is
        read.

        ``cold``: this process decides one frame and ends (a one-shot). Unless an engine
        is pinned, it then runs on onnxruntime wherever that may run the model: OpenVINO's
        import and first-inference compile cost a cold one-shot more than its faster
        inference saves (bench/run.py measures both). Its records say so.
        """
        card = read_card(os.path.realpath(path)) if os.path.isfile(path) else None
        if card is None:  # Model says what is wrong with the file
            return cls(Model(path, threads), binning, threshold)
        import_onnxruntime()
        engine = resolve_engine()
        if cold and engine == AUTO and refusal("onnxruntime", card, cpu_flags()) is None:
            engine = "onnxruntime"
        if "openvino" in pick(card, engine):
            import_openvino()

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frameqc-session")
        loading = pool.submit(Model, path, threads, card, engine)
        pool.shutdown(wait=False)
        return cls(loading, binning, threshold, card)

    def __repr__(self) -> str:
        card = self.card
        return (f"Classifier({str(self.wait_model().path)!r}, labels={card.labels}, "
                f"{card.precision}, threshold={self.threshold})")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    def _prepare_all(self, sources: list[tuple[str, Source]]) -> list[Result]:
        out = []
        for name, source in sources:
            try:
                prepared = prepare(source, self.recipe)
                out.append(Result(name, timings=dict(prepared.timings), prepared=prepared,
                                  date_obs=prepared.date_obs))
            except FrameError as exc:
                out.append(Result(name, error=str(exc)))
            except MemoryError:
                out.append(Result(name, error="frame too large for memory"))
            except FrameQCError:  # a bad setting ($FRAMEQC_MAX_PIXELS) is the run's, not a frame's
                raise
            except Exception as exc:  # a bug met by one frame must not lose the batch
                out.append(Result(name, error=f"internal error reading this frame "
                                              f"({type(exc).__name__}: {first_line(exc)})"))
        return out

    def _infer(self, results: list[Result]) -> list[Result]:
        """Decide every prepared result in place, batch by batch of one size."""
        card, model = self.card, self.wait_model()
        for group in size_groups([r for r in results if r.prepared is not None]):
            t0 = time.perf_counter()
            probs = model.predict(np.stack([r.prepared.tensor for r in group]))
            each = (time.perf_counter() - t0) / len(group)
            for r, p in zip(group, probs, strict=True):
                r.decision = decide(p, card.labels, card.alerts, self.threshold, card.margin)
                r.timings["infer"] = each
                r.engine = model.engine
        return results

    def run(self, sources: Iterable[Source | tuple[str, Source]], batch_size: int = 8
            ) -> Iterator[Result]:
        """Classify frames, yielding results in order; a frame that fails has ``error`` set.

        Each item is a path, a file's bytes, a :class:`Frame`, or a ``(name, source)``
        pair naming it in the results. Frames go through the network in batches of 1, 2,
        4... up to ``batch_size`` (:func:`ramp`), each next one read while one is inferred.
        """
        it = (s if isinstance(s, tuple) else (_name(s), s) for s in sources)
        sizes = ramp(batch_size)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._prepare_all, list(islice(it, next(sizes))))
            self.wait_model()  # a model that cannot load stops the run here
            while True:
                results = pending.result()
                if not results:
                    return
                pending = pool.submit(self._prepare_all, list(islice(it, next(sizes))))
                yield from self._infer(results)

    def classify(self, source: Source | np.ndarray, name: str | None = None) -> Result:
        """One frame, synchronously: a path, a file's bytes, a :class:`Frame` or an array.

        An array is a 2-D image (FITS pixel data, binned and stretched by the recipe) or
        an ``(H, W, 3)`` uint8 RGB image (for ``rgb`` models).
        """
        if isinstance(source, np.ndarray):
            source = Frame.from_array(source)
        self.wait_model()  # a model that cannot load is said before any frame
        return self._infer(self._prepare_all([(_name(source) if name is None else name,
                                               source)]))[0]


def ramp(batch_size: int) -> Iterator[int]:
    """Frames to read for each batch: 1, 2, 4... up to ``batch_size``, then ``batch_size``.

    Nothing runs through the network while the first batch is read: one frame first puts
    the network to work after one frame's reading, not ``batch_size`` frames' (each
    archive task starts so: 16 frames a task lost 13% of its time waiting for its first
    eight). While the batches grow, each is read while the one before, half its size, is
    inferred: a frame's inference costs vgg16 2-5x its reading and binning, so the reading
    keeps up.
    """
    size = 1
    while True:
        yield min(size, batch_size)
        size = min(2 * size, batch_size)


def size_groups(ready: list[Result], pixels: int = BATCH_PIXELS) -> list[list[Result]]:
    """Results of one tensor shape together, in input order within a shape, each group at
    most ``pixels`` pixels (a frame larger than that alone)."""
    by_shape: dict[tuple[int, ...], list[list[Result]]] = {}
    for r in ready:
        shape = r.prepared.tensor.shape
        groups = by_shape.setdefault(shape, [[]])
        if groups[-1] and (len(groups[-1]) + 1) * shape[-1] * shape[-2] > pixels:
            groups.append([])
        groups[-1].append(r)
    return [g for groups in by_shape.values() for g in groups]


def _name(source: Source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else "-"
