"""``frameqc archive``: reclassify an archive of frames on a Dask cluster, Parquet out.

The work runs on ``dask.distributed``: a LocalCluster on this machine, or an existing
cluster (``dask scheduler``/``dask worker``, or dask-jobqueue on a batch system).

- **Sources** are files, folders (searched recursively) and ``@LIST`` files of paths,
  read as a stream: the client holds a bounded window of batches, never the whole list.
- **Workers** load the model once, through a worker plugin, and keep it; a task is a
  batch of paths, classified by :class:`~frameqc.runtime.engine.pipeline.Classifier` (the
  decisions ``frameqc classify`` makes).
- **Output** is a Parquet dataset: each task writes one file, named by the run and the
  batch, to a hidden temporary name and renames it into place. A task that Dask runs
  again (its worker died) replaces the same file, so no frame is lost or written twice.
- **Resume**: frames already in the dataset for the same model id are skipped.

This module is the client's side and imports no Dask until it runs; what runs on the
workers is in :mod:`frameqc.runtime.archive.tasks`.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TextIO

from frameqc.runtime.data.sources import expand
from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.util.progress import Progress

#: Paths per task: two read-ahead batches of the classifier. Measured here (100 frames,
#: 2 workers): 16 keeps both workers busy to the end (27.8 frames/s after start-up);
#: 32 left one idle for the last task (25.7/s). Tasks that small cost the scheduler
#: nothing next to 0.5 s of classifying each.
BATCH = 16


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("archive needs the dask extra: pip install 'frameqc[dask]'") from None


# -- sources ------------------------------------------------------------------------------

def iter_sources(sources: Iterable[str]) -> Iterator[str]:
    """Absolute frame paths of ``sources`` (the one grammar: :mod:`~frameqc.runtime.data.
    sources`), streamed: a folder is walked and a list read as the paths are consumed."""
    return (os.path.abspath(p) for p in expand(sources))


def batches(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(paths)
    while chunk := list(islice(it, size)):
        yield chunk


# -- on the client ------------------------------------------------------------------------

@dataclass
class Summary:
    frames: int = 0
    errors: int = 0
    skipped: int = 0
    labels: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    startup: float = 0.0  # of which: starting the cluster and loading the model on workers

    def add(self, part: dict) -> None:
        self.frames += part["frames"]
        self.errors += part["errors"]
        self.labels.update(part["labels"])

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none"
        return (f"{self.frames} frames in {self.seconds:.1f} s ({rate:.1f} frames/s; "
                f"{self.startup:.1f} s of it starting the cluster): {labels}; "
                f"{self.errors} errors" +
                (f"; {self.skipped} already done, skipped" if self.skipped else ""))


def done_paths(out: Path, model_id: str) -> set[str]:
    """Paths already in the dataset for this model id (``--resume``)."""
    import pyarrow.dataset as ds

    if not any(out.glob("*.parquet")):
        return set()
    table = ds.dataset(str(out), format="parquet").to_table(
        columns=["path"], filter=ds.field("model") == model_id)
    return set(table.column("path").to_pylist())


def archive(model: str | os.PathLike, out: str | os.PathLike, sources: list[str],
            scheduler: str | None = None, workers: int | None = None, resume: bool = False,
            batch: int = BATCH, err: TextIO | None = None) -> Summary:
    """Classify every frame of ``sources`` on a Dask cluster into the dataset ``out``.

    Parameters
    ----------
    model : path
        The exported model; the workers must see it at the same path.
    scheduler : str, optional
        An existing scheduler's address (``tcp://host:8786``); else a LocalCluster of
        ``workers`` processes (default: one per usable CPU, one thread each).
    resume : bool
        Skip frames already in ``out`` for this model id; without it, an ``out`` that
        holds results for this model is refused.
    """
    require_dask()
    from distributed import Client, LocalCluster, as_completed

    from frameqc.runtime.archive.tasks import ModelPlugin, classify_batch
    from frameqc.runtime.model.cpu import available_cpus
    from frameqc.runtime.model.peek import read_card

    err = err or sys.stderr
    model = os.path.realpath(model)
    card: ModelCard | None = read_card(model)
    if card is None:
        raise UsageError(f"{model}: not a frameqc model file")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"-o {out}: cannot create it ({exc.strerror or exc})") from None
    done = done_paths(out, card.model_id)
    if done and not resume:
        raise UsageError(f"{out} already holds {len(done)} frames for model {card.model_id}: "
                         "add --resume to go on where it stopped, or choose another folder")
    summary = Summary()
    cluster = None
    t0 = time.perf_counter()
    if scheduler is None:
        n = workers or available_cpus()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
    try:
        with Client(scheduler or cluster) as client:
            if scheduler is None:
                threads = max(1, available_cpus() // (workers or available_cpus()))
            else:
                threads = None
            client.register_plugin(ModelPlugin(model, threads))
            summary.startup = time.perf_counter() - t0
            slots = max(2, 2 * sum(client.nthreads().values()))
            run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            progress = Progress("frames", None, err)
            pending = as_completed()
            for i, paths in enumerate(batches(_not_done(sources, done, summary), batch)):
                pending.add(client.submit(classify_batch, paths, str(out), f"part-{run}-{i:07d}",
                                          key=f"frameqc-{run}-{i}", retries=2))
                while pending.count() >= slots:
                    summary.add(next(pending).result())
                    progress.update(summary.frames + summary.skipped, f"{summary.errors} errors")
            for fut in pending:
                summary.add(fut.result())
                progress.update(summary.frames + summary.skipped, f"{summary.errors} errors")
            progress.close()
    finally:
        if cluster is not None:
            cluster.close()
        for tmp in out.glob(".part-*.tmp"):  # left by a worker killed while writing
            tmp.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _not_done(sources: list[str], done: set[str], summary: Summary) -> Iterator[str]:
    for path in iter_sources(sources):
        if path in done:
            summary.skipped += 1
        else:
            yield path
