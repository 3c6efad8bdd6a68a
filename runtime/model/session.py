"""The model: one inference session and the card read from the same file.

The one place that builds an inference session: ``onnxruntime.InferenceSession``
(:func:`open_session`, its options in :func:`session_options`) or, behind the same
:class:`Model`, an OpenVINO compiled model (:mod:`~frameqc.runtime.model.engines`, the
engine chosen by :func:`open_engine`). The runtime, the export's validation and gates,
training's check and the demo all run the network the same way.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from frameqc.runtime.errors import ModelError, UsageError
from frameqc.runtime.model import import_onnxruntime
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.cpu import resolve_threads
from frameqc.runtime.model.engines import resolve_engine
from frameqc.runtime.model.peek import read_card
from frameqc.runtime.util.text import first_line

PREPACK_ENV = "FRAMEQC_PREPACK"  # auto (default), on, off


def want_prepack(precision: str) -> bool:
    """Whether a session of a model of this precision prepacks its weights.

    Prepacking rearranges the weights for the CPU's kernels while the session is built,
    and it changes the probabilities in their last digits; so it depends on the model
    alone, never on the kind of process, and a frame gets the same digits from a
    one-shot, a batch or the server. Measured here (vgg16, 2 cores): it costs 0.80 s for
    fp32 and 0.29 s for int8, and pays back only for int8 (0.024 s a frame instead of
    0.096 s); fp32 runs as fast unpacked (0.077 s a frame either way). So int8 prepacks
    and fp32 does not. ``$FRAMEQC_PREPACK`` = ``on`` or ``off`` overrides the rule (set it
    alike for the server and its clients).
    """
    choice = os.environ.get(PREPACK_ENV, "auto").lower()
    if choice in ("on", "off"):
        return choice == "on"
    if choice != "auto":
        raise UsageError(f"${PREPACK_ENV} must be auto, on or off, not {choice!r}")
    return precision == "int8"


def session_options(threads: int | None = None, prepack: bool = False, optimize: bool = True,
                    save: str | os.PathLike | None = None) -> Any:
    """The options every session in frameqc is built with.

    Sequential execution on ``threads`` intra-op threads (default: the CPUs this process
    may use), full graph optimisation, quiet logs, no busy-waiting between operators
    (frames are prepared on the same cores while the network runs: 100 frames in 5.6 s
    instead of 5.9 s, and a resident server stays idle between requests), and weights
    prepacked only when asked (:func:`want_prepack`). A graph already optimised (from
    :mod:`~frameqc.runtime.model.graphcache`) is loaded with ``optimize`` False; ``save``
    writes the optimised graph there, its weights beside it.
    """
    ort = import_onnxruntime()
    ort.set_default_logger_severity(3)
    ort.disable_telemetry_events()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = resolve_threads(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3
    if save is not None:
        opts.optimized_model_filepath = str(save)
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                      os.path.basename(save) + ".data")
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    return opts


def open_session(model: str | os.PathLike | bytes, threads: int | None = None,
                 prepack: bool = False, optimize: bool = True,
                 save: str | os.PathLike | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU, from a path or serialized bytes."""
    ort = import_onnxruntime()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(threads, prepack, optimize, save),
                                providers=["CPUExecutionProvider"])


def _open_cached(model: str, threads: int, prepack: bool) -> tuple[Any, str]:
    """A session for ``model`` through the graph cache: ``(session, how)``.

    ``how`` is ``cached`` (an optimised graph loaded as it is), ``built`` (optimised now)
    or ``built+saved`` (optimised now and saved for the next process).
    """
    from frameqc.runtime.model import graphcache

    if not graphcache.enabled():
        return open_session(model, threads, prepack), "built"
    material = graphcache.key(model)
    cached = graphcache.lookup(material)
    if cached is not None:
        try:
            return open_session(cached, threads, prepack, optimize=False), "cached"
        except Exception:  # a damaged entry is rebuilt, never trusted
            graphcache.discard(material)
    stage = graphcache.staging(material)
    if stage is not None:
        try:
            session = open_session(model, threads, prepack, save=stage / graphcache.GRAPH)
        except Exception:
            graphcache.discard_stage(stage)
        else:
            graphcache.commit(stage, material)
            return session, "built+saved"
    return open_session(model, threads, prepack), "built"


def open_engine(name: str, path: str, precision: str, threads: int | None = None) -> Any:
    """A session of engine ``name`` other than onnxruntime (today OpenVINO,
    :mod:`.engines.openvino`) for ``path``, computing at ``precision`` (the card's)."""
    from frameqc.runtime.model.engines.openvino import OpenVINOSession

    if name != "openvino":
        raise UsageError(f"no engine {name!r} here")
    return OpenVINOSession(path, precision, resolve_threads(threads))


class Model:
    """An exported frameqc model, ready to run on the CPU.

    Parameters
    ----------
    path : path
        A ``.onnx`` file written by ``frameqc export`` (or ``frameqc demo``).
    threads : int, optional
        inference threads (either engine); default :func:`resolve_threads`.
    card : ModelCard, optional
        The card, when the caller read it from this file already: not read again.
    engine : str, optional
        ``auto`` (default ``$FRAMEQC_ENGINE``, else auto: the fastest engine here that
        computes what the card validated, :mod:`~frameqc.runtime.model.engines.choice`),
        ``onnxruntime`` or ``openvino``.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 card: ModelCard | None = None, engine: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        real = os.path.realpath(self.path)  # its weights file is found beside it, not the link
        early = card if card is not None else read_card(real)
        self.card = early  # None: the session says below what is wrong with the card
        self.prepacked = want_prepack(early.precision if early else "fp32")
        self.threads = resolve_threads(threads)
        self._lock = threading.Lock()
        self.engine, self.whole_batches, self.session = "onnxruntime", self.prepacked, None
        names = ["onnxruntime"]
        if early is not None:  # else onnxruntime says what is wrong with the file
            from frameqc.runtime.model.engines.choice import pick

            names = pick(early, resolve_engine(engine))
        if names == ["onnxruntime"]:
            self._open_one(real, "onnxruntime")
        else:
            self._open_chosen(real, names)

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        if self.engine == "onnxruntime":
            return self.session.run([self.output_name], {self.input_name: tensor})[0]
        return self.session.run(tensor)

    def _open_chosen(self, real: str, names: list[str]) -> None:
        """Open the fastest of ``names`` (measured once per model, CPU and threads).

        A lone OpenVINO candidate is measured too: the measurement says whether its
        batches keep each frame's digits.
        """
        from frameqc.runtime.model.engines import choice
        from frameqc.runtime.model.engines.cpuflags import cpu_flags

        material = choice.key(real, self.threads, cpu_flags())
        timings = choice.remembered(material)
        measured = False
        if choice.stale(names, timings):
            with choice.exclusive():
                timings = choice.remembered(material)  # another process may have measured
                if choice.stale(names, timings):
                    measured = True
                    for name in names:  # one at a time: two sessions are not held at once
                        self._open_one(real, name)
                        timings[name] = choice.measure(
                            self._run, self.card.input_size, together=len(names) > 1,
                            whole=self.prepacked if name == "onnxruntime" else None)
                        choice.remember(material, name, timings[name])
        best = choice.choose(names, timings, real, said=measured)
        if best != self.engine or self.session is None:
            self._open_one(real, best)
        self.whole_batches = (self.prepacked if best == "onnxruntime"
                              else timings[best].whole_batches)

    def _open_one(self, real: str, name: str) -> None:
        """Build the session of engine ``name``; its errors as one line."""
        self.session = None  # the previous engine's session is freed before the next
        self.engine = name
        if name != "onnxruntime":
            self.session = open_engine(name, real, self.card.precision, self.threads)
            self.graph = "compiled"
            return
        try:
            self.session, self.graph = _open_cached(real, self.threads, self.prepacked)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            text = str(exc).strip()
            missing = re.search(r'External data path does not exist: "?([^"\n]+)', text)
            if missing:
                raise ModelError(f"{self.path}: its weights file {missing.group(1)} is missing "
                                 "(keep the .data file exported with it beside it)") from None
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first_line(exc)})"
                             ) from None
        if self.card is None:  # the session says what is wrong with the card
            try:
                self.card = ModelCard.from_metadata(self.session.get_modelmeta()
                                                    .custom_metadata_map)
            except ModelError as exc:
                raise ModelError(f"{self.path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def warm_up(self) -> None:
        """Run one frame of zeros: an engine's first run allocates and tunes, slowly, so a
        resident process (a server, an archive worker) pays it before its first frame."""
        import numpy as np

        size = self.card.input_size
        self.predict(np.zeros((1, 3, size, size), np.float32))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(n, n_labels)`` float32, for a ``(n, 3, S, S)`` batch.

        Calls are serialised: concurrent callers (server clients) queue for the CPUs
        instead of splitting them, so each answer comes as fast as it can.

        A frame's probabilities do not depend on the frames beside it. An unpacked session
        runs a batch of one through other kernels (matrix-vector products in the fully
        connected layers) than a larger batch, with other last digits; so an unpacked
        session runs every frame on its own, as a one-shot and a server's request do.
        That costs a batch about 10 % (the fully connected weights are read once a frame);
        running a lone frame twice instead would cost a cold one-shot a second inference.
        A prepacked session (int8) runs the same kernels at any batch size.
        An OpenVINO session runs batches whole only where the engine measurement found
        them to keep each frame's digits (:func:`.engines.choice.measure`).
        """
        import numpy as np

        tensor = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            if self.whole_batches or len(tensor) == 1:
                return self._run(tensor)
            return np.concatenate([self._run(tensor[i:i + 1]) for i in range(len(tensor))])


