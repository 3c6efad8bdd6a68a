"""What ``frameqc archive`` runs on the Dask workers: the model, once each, and a task.

A task classifies a batch of paths with the worker's model and writes one Parquet file,
under a hidden temporary name first, flushed to disk, then renamed into place: a task run
again (its worker died) replaces the same file, so no frame is lost or written twice, and
a crash of the machine leaves either the whole part or none.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from frameqc.runtime.output.destinations import Destinations
from frameqc.runtime.output.record import arrow_schema, flat
from frameqc.runtime.util.files import fsync_path

PLUGIN = "frameqc-model"


class ModelPlugin(WorkerPlugin):
    """Loads the model once on each worker (and on workers that join later)."""

    name = PLUGIN

    def __init__(self, model: str, threads: int | None = None) -> None:
        self.model, self.threads = model, threads
        self.classifier = None

    def setup(self, worker) -> None:
        """Load the model with ``threads``, else the worker's own share (its ``--nthreads``):
        ``dask worker --nworkers 4 --nthreads 1`` gives each of the 4 sessions 1 thread,
        not every CPU of the node."""
        import pyarrow.parquet  # noqa: F401  (imported here: start-up, not the first task)

        from frameqc.runtime.engine.pipeline import Classifier
        from frameqc.runtime.model.session import Model

        model = Model(self.model, self.threads or worker.state.nthreads)
        model.warm_up()
        self.classifier = Classifier(model)


def sync_and_rename(tmp: str, dest: str) -> None:
    """Flush ``tmp`` to disk, rename it to ``dest``, and flush the folder's entry."""
    fsync_path(tmp)
    os.replace(tmp, dest)
    fsync_path(os.path.dirname(dest) or ".")


def classify_batch(paths: list[str], out: str, part: str) -> dict:
    """A task: classify ``paths`` with the worker's model, write ``OUT/<part>.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    clf = get_worker().plugins[PLUGIN].classifier
    card = clf.card
    rows: list[dict] = []
    destinations = Destinations(None, senders=[lambda rec, timings:
                                               rows.append(flat(rec, card.labels))])
    for r in clf.run(paths):
        destinations.send(r, card)
        r.prepared = None
    table = pa.Table.from_pylist(rows, schema=arrow_schema(card.labels))
    tmp = os.path.join(out, f".{part}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp)
        sync_and_rename(tmp, os.path.join(out, f"{part}.parquet"))  # a rerun replaces
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"frames": len(rows), "errors": sum(r["error"] is not None for r in rows),
            "labels": Counter(r["label"] for r in rows if r["label"])}
