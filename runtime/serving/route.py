"""Where frames are decided: by a running ``frameqc serve`` that serves this model, else here.

``classify``, the Python API and the commands to come all go through :class:`Router`, so a
frame gets the same record whichever process decided it. A server is used only when it
serves the very model file this process would load; one that stops answering part-way
hands the rest of the frames back to this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model import resolve_model_path
from frameqc.runtime.output.destinations import Answer

if TYPE_CHECKING:
    from frameqc.runtime.engine.pipeline import Classifier, Result
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.serving.client import Connection


class Router:
    """Decide frames through a server when one serves ``model``, else in this process.

    :meth:`open` chooses (and reads the model's card once, or takes the server's): the
    labels and alert labels are known before the first frame. :meth:`run` yields each
    frame's :class:`~frameqc.runtime.engine.pipeline.Result` when decided here, or the
    server's :class:`~frameqc.runtime.output.destinations.Answer`.

    Parameters
    ----------
    model : path, optional
        The model (default ``$FRAMEQC_MODEL``).
    socket : path, optional
        Insist on the server there (an error if none answers for this model). Without it,
        the default socket is tried and frames are decided here when nobody answers.
    binning, threshold : optional
        ``--bin`` and ``--threshold``, checked here, once, before anything is done.
    local : bool
        Never ask a server (``--preview`` needs what this process prepared).
    """

    def __init__(self, model: str | os.PathLike | None = None, socket: str | None = None,
                 binning: str | int | None = None, threshold: float | None = None,
                 threads: int | None = None, local: bool = False) -> None:
        if local and socket:
            raise UsageError("--preview saves what this process prepared; drop --socket")
        if binning is not None or threshold is not None:  # imported only then: light path
            from frameqc.runtime.model.decision import check_overrides

            binning, threshold = check_overrides(binning, threshold)
        self.model = resolve_model_path(model, required=False)
        self.socket, self.local = socket, local
        self.binning, self.threshold, self.threads = binning, threshold, threads
        self.labels: Sequence[str] = ()
        self.alerts: Sequence[str] = ()
        self.card: ModelCard | None = None  # the card read here, once a model is loaded here
        self._conn: Connection | None = None
        self._classifier: Classifier | None = None

    def open(self, frames: int | None = None) -> Router:
        """Connect to a server that serves the model, else load it here; labels known.

        ``frames``: how many frames will be decided (1: a one-shot, see ``Classifier.load``).
        """
        if not self.local:
            from frameqc.runtime.serving.client import connect

            self._conn = connect(self.socket, self.model)
            if self._conn is not None:
                card = self._conn.status["card"]
                self.labels, self.alerts = tuple(card["labels"]), tuple(card["alerts"])
                return self
        self._load(frames)
        return self

    def _load(self, frames: int | None = None) -> Classifier:
        """The model loaded here; ``frames``: how many it will decide (1: a one-shot)."""
        if self._classifier is None:
            from frameqc.runtime.engine.pipeline import Classifier

            self._classifier = Classifier.load(resolve_model_path(self.model), self.threads,
                                               self.binning, self.threshold,
                                               cold=frames == 1)
            self.card = self._classifier.card
            self.labels, self.alerts = self.card.labels, self.card.alerts
        return self._classifier

    def run(self, paths: Sequence[str]) -> Iterator[Result | Answer]:
        """Decide every path, in order: through the server while it answers, then here."""
        done = 0
        if self._conn is not None:
            from frameqc.runtime.serving.client import ServerGone

            try:
                replies = self._conn.classify([os.path.abspath(p) for p in paths],
                                              self.binning, self.threshold)
                for name, reply in zip(paths, replies, strict=False):
                    done += 1
                    yield Answer(dict(reply["record"], path=name), reply["timings"])
            except ServerGone as exc:
                if self.socket:
                    raise UsageError(f"the server stopped answering ({exc})") from None
            finally:
                self.close()
        if done < len(paths):
            yield from self._load().run((p, p) for p in paths[done:])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

