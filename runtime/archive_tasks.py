"""What ``frameqc archive`` runs on the Dask workers: the model, once each, and a task.

A task classifies a batch of paths with the worker's model and writes one Parquet file,
under a hidden temporary name first, then renamed into place: a task run again (its
worker died) replaces the same file, so no frame is lost or written twice.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from datetime import datetime, timedelta

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

PLUGIN = "frameqc-model"


def night_of(date_obs: str | None) -> str | None:
    """The observing night a DATE-OBS belongs to: the UTC date 12 hours earlier.

    A frame taken at 02:00 on 9 July belongs to the night of 8 July, like the one taken
    at 22:00 on 8 July. A bare date is its own night; anything unparsable gives None.
    """
    if not date_obs:
        return None
    try:
        if "T" not in date_obs:
            return datetime.fromisoformat(date_obs.strip()[:10]).date().isoformat()
        when = datetime.fromisoformat(date_obs.strip()[:19])
    except ValueError:
        return None
    return (when - timedelta(hours=12)).date().isoformat()


class ModelPlugin(WorkerPlugin):
    """Loads the model once on each worker (and on workers that join later)."""

    name = PLUGIN

    def __init__(self, model: str, threads: int | None = None) -> None:
        self.model, self.threads = model, threads
        self.classifier = None

    def setup(self, worker) -> None:
        from .model import Model
        from .pipeline import Classifier

        self.classifier = Classifier(Model(self.model, self.threads))


def schema(labels: tuple[str, ...]):
    """One row per frame: the decision, every label's probability, or the error."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("night", pa.string()), ("label", pa.string()),
                      ("index", pa.int16()), ("probability", pa.float64()),
                      *((f"p_{k}", pa.float64()) for k in labels), ("model", pa.string()),
                      ("error", pa.string()), ("seconds", pa.float64())])


def classify_batch(paths: list[str], out: str, part: str) -> dict:
    """A task: classify ``paths`` with the worker's model, write ``OUT/<part>.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    clf = get_worker().plugins[PLUGIN].classifier
    card = clf.model.card
    rows = []
    for r in clf.run(paths):
        d = r.decision
        rows.append({"path": r.path, "model": card.model_id, "error": r.error,
                     "seconds": round(r.seconds, 4),
                     "night": night_of(r.prepared.date_obs) if r.prepared else None,
                     "label": d.label if d else None, "index": d.index if d else None,
                     "probability": d.probability if d else None,
                     **{f"p_{k}": d.probabilities[k] if d else None for k in card.labels}})
        r.prepared = None
    table = pa.Table.from_pylist(rows, schema=schema(card.labels))
    tmp = os.path.join(out, f".{part}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(out, f"{part}.parquet"))  # a rerun replaces, never adds
    return {"frames": len(rows), "errors": sum(r["error"] is not None for r in rows),
            "labels": Counter(r["label"] for r in rows if r["label"])}
