"""Where frames are decided: by a running ``frameqc serve`` that serves this model, else here.

``classify``, the Python API and the commands to come all go through :class:`Route`, so a
frame gets the same record whichever process decided it. A server is used only when it
serves the very model file this process would load; one that stops answering part-way
hands the rest of the frames back to this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model import MODEL_ENV

if TYPE_CHECKING:
    from pathlib import Path

    from frameqc.runtime.engine.pipeline import Result

#: What a route yields per frame: the record, the seconds of each step, and (when decided
#: here) the result with what the network saw.
Decided = tuple[dict, dict[str, float], "Result | None"]


class Route:
    """Decide frames through a server when one serves ``model``, else in this process.

    Parameters
    ----------
    model : path, optional
        The model (default ``$FRAMEQC_MODEL``).
    socket : path, optional
        Insist on the server there (an error if none answers for this model). Without it,
        the default socket is tried and frames are decided here when nobody answers.
    local : bool
        Never ask a server (``--preview`` needs what this process prepared).
    """

    def __init__(self, model: str | os.PathLike | None = None, socket: str | None = None,
                 binning: str | int | None = None, threshold: float | None = None,
                 threads: int | None = None, local: bool = False) -> None:
        if local and socket:
            raise UsageError("--preview saves what this process prepared; drop --socket")
        if binning is not None:  # checked here, imported only then: the light path stays so
            from frameqc.runtime.model.card import parse_binning

            parse_binning(binning)
        if threshold is not None:
            from frameqc.runtime.model.decision import check_threshold

            check_threshold(threshold)
        self.model = model or os.environ.get(MODEL_ENV)
        self.socket, self.local = socket, local
        self.binning, self.threshold, self.threads = binning, threshold, threads
        self.labels: Sequence[str] = ()

    def run(self, paths: Sequence[str]) -> Iterator[Decided]:
        """Decide every path, in order: through the server while it answers, then here."""
        done = 0
        if not self.local:
            from frameqc.runtime.serving.client import ServerGone, connect

            conn = connect(self.socket, self.model)
            if conn is not None:
                self.labels = tuple(conn.status["card"]["labels"])
                try:
                    replies = conn.classify([os.path.abspath(p) for p in paths],
                                            self.binning, self.threshold)
                    for name, reply in zip(paths, replies, strict=False):
                        done += 1
                        yield dict(reply["record"], path=name), reply["timings"], None
                except ServerGone as exc:
                    if self.socket:
                        raise UsageError(f"the server stopped answering ({exc})") from None
                finally:
                    conn.close()
        if done < len(paths):
            yield from self._here(paths[done:])

    def _here(self, paths: Sequence[str]) -> Iterator[Decided]:
        from frameqc.runtime.engine.pipeline import Classifier
        from frameqc.runtime.model.session import resolve_model_path
        from frameqc.runtime.output.record import record

        classifier = Classifier.load(resolve_model_path(self.model), self.threads,
                                     self.binning, self.threshold, cold=len(paths) == 1)
        card = classifier.card
        self.labels = card.labels
        for result in classifier.run((p, p) for p in paths):
            yield record(result, card), result.timings, result


def classify_paths(paths: Sequence[str | Path], **options) -> Iterator[Decided]:
    """Decide ``paths`` as ``frameqc classify`` does (``options`` as :class:`Route`'s)."""
    return Route(**options).run([str(p) for p in paths])
