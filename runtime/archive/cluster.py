"""``frameqc archive``: reclassify an archive of frames on a Dask cluster, Parquet out.

The work runs on ``dask.distributed``: a LocalCluster on this machine, or an existing
cluster (``dask scheduler``/``dask worker``, or dask-jobqueue on a batch system).

- **Sources** are files, folders (searched recursively) and ``@LIST`` files of paths,
  read as a stream: the client holds a bounded window of batches, never the whole list.
- **Workers** load the model once, through a worker plugin, and keep it; a task is a
  batch of paths, classified by :class:`~frameqc.runtime.engine.pipeline.Classifier` (the
  decisions ``frameqc classify`` makes).
- **Output** is a Parquet dataset: each task writes one file, named by the run and the
  batch (``part-<run>-<batch>.parquet``), to a hidden temporary name, flushes it to disk and
  renames it into place. A task that Dask runs again (its worker died) replaces the same
  file, so no frame is lost or written twice. Only files named like parts are read back;
  a part that cannot be read (truncated by a crash) is named and passed over, and other
  files in OUT (a user's summary) are left alone.
- **Model**: rows are told apart by model id *and* precision (an fp32 model and its int8
  twin share weights, hence the id).
- **Resume**: frames already decided in the dataset by the same model are skipped; frames
  that failed are tried again, and once the run is over their old error rows are removed
  (a frame keeps one row). Without ``--resume``, an OUT holding rows of this model is
  refused.
- **One run per OUT**: a run holds a lock on ``OUT/.frameqc-archive.lock`` from before it
  reads what OUT holds until its last part is in; a second run on the same OUT is refused
  in one line (two runs would each think the other's frames not done and do them twice,
  and a resume would remove the rows the other is writing).
- **Failures**: a task that keeps failing (a full disk, a worker killed by a frame) is one
  line; the other tasks' work stays, and its frames are counted as lost (exit 1).

This module is the client's side and imports no Dask until it runs; what runs on the
workers is in :mod:`frameqc.runtime.archive.tasks`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from frameqc.runtime.data.sources import expand
from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.util.progress import Progress
from frameqc.runtime.util.text import first_line

if TYPE_CHECKING:
    from distributed import LocalCluster

#: Paths per task: two read-ahead batches of the classifier. Measured here (100 frames,
#: 2 workers): 16 keeps both workers busy to the end (27.8 frames/s after start-up);
#: 32 left one idle for the last task (25.7/s). Tasks that small cost the scheduler
#: nothing next to 0.5 s of classifying each.
BATCH = 16

#: The name of a part file this command writes (:func:`part_name`); nothing else is read.
PART = re.compile(r"part-\d{8}T\d{6}-[0-9a-f]{6}-\d{7}\.parquet")


#: Dask settings of a LocalCluster's workers. No statistical profiler (it samples each
#: worker's stack every 10 ms for a dashboard this cluster does not serve): 2-3 % of the
#: rate. Not Dask's MALLOC_TRIM_THRESHOLD_ (which turns off glibc's sliding mmap threshold,
#: so each 16-32 MB frame array is mapped, faulted in and unmapped anew): 10 % of the rate,
#: measured here with two 1-thread processes classifying 80 full-size frames each; the
#: workers' peak RSS stays where it was (678 MB). docs/archive.md gives both for a cluster
#: of one's own. A MALLOC_TRIM_THRESHOLD_ in the environment is still honoured.
LOCAL_WORKERS = {"distributed.worker.profile.enabled": False,
                 "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

#: The lock a run holds on its OUT (hidden, so never taken for a part or a user's file).
LOCK = ".frameqc-archive.lock"


@contextlib.contextmanager
def holding(out: Path, err: TextIO | None = None) -> Iterator[None]:
    """Hold ``out``'s lock for a run; a UsageError naming the holder when another run has it.

    An ``flock`` on a file of its own: released by the kernel however the run ends (even
    killed), so a stale lock file never blocks the next run. It names its holder. On a
    file system that keeps no locks the run goes on, and says so on ``err``.
    """
    path = out / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"-o {out}: cannot write there ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UsageError(f"{out} is being written by another frameqc archive run "
                             f"({holder}); wait for it to end, or choose another folder"
                             ) from None
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: a file system without locks
            _warn(err or sys.stderr, f"cannot lock {out} "
                                    f"({exc.strerror or exc}); a second run on it would not "
                                    "be refused")
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def part_name(run: str, i: int) -> str:
    """The part of batch ``i`` of ``run`` (without ``.parquet``)."""
    return f"part-{run}-{i:07d}"


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
class ArchiveTotals:
    """What a run did, for its closing line and its exit status."""

    frames: int = 0
    errors: int = 0
    skipped: int = 0
    lost: int = 0  # frames of tasks that failed: not in OUT
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
                (f"; {self.skipped} already done, skipped" if self.skipped else "") +
                (f"; {self.lost} frames lost in failed tasks (--resume retries them)"
                 if self.lost else ""))


@dataclass
class Previous:
    """What OUT already holds for one model (id and precision)."""

    decided: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)  # error rows only
    stale: set[str] = field(default_factory=set)  # error rows beside a decision (a cut resume)

    def __len__(self) -> int:
        return len(self.decided) + len(self.failed)


def _warn(err: TextIO, text: str) -> None:
    err.write(f"frameqc archive: {text}\n")
    err.flush()


def read_parts(out: Path, columns: list[str] | None, err: TextIO
               ) -> Iterator[tuple[Path, object]]:
    """Our part files in ``out`` as Arrow tables (``columns``, those a part has; None: all).

    A file named like a part that cannot be read (a truncated write) is named in one line
    and passed over; files not named like parts are not ours and are not opened.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in sorted(p for p in out.iterdir() if PART.fullmatch(p.name)):
        try:
            pf = pq.ParquetFile(path)
            have = pf.schema_arrow.names
            yield path, pf.read(columns=None if columns is None else
                                [c for c in columns if c in have])
        except (OSError, ValueError, pa.ArrowException) as exc:
            _warn(err, f"{path}: not a readable part ({first_line(exc)}); skipped")


def _of_model(table, model_id: str, precision: str):
    """The rows of ``table`` made by this model (a part without precision made by none)."""
    import pyarrow.compute as pc

    if "precision" not in table.column_names or "model" not in table.column_names:
        return table.slice(0, 0)
    return table.filter(pc.and_(pc.equal(table["model"], model_id),
                                pc.equal(table["precision"], precision)))


def previous(out: Path, model_id: str, precision: str, err: TextIO) -> Previous:
    """The frames OUT holds for this model: decided ones and ones with only error rows."""
    prev = Previous()
    for _, table in read_parts(out, ["path", "model", "precision", "error"], err):
        rows = _of_model(table, model_id, precision)
        for path, error in zip(rows["path"].to_pylist(), rows["error"].to_pylist(),
                               strict=True):
            (prev.failed if error is not None else prev.decided).add(path)
    prev.stale = prev.failed & prev.decided
    prev.failed -= prev.decided
    return prev


def supersede(out: Path, run: str, model_id: str, precision: str, paths: set[str],
              err: TextIO) -> None:
    """Remove this model's error rows of ``paths`` from parts older than ``run``.

    Called after a resumed run: a frame tried again keeps only its new row. A part is
    rewritten to a temporary name, flushed and renamed, like a task's.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from frameqc.runtime.archive.tasks import sync_and_rename

    if not paths:
        return
    wanted = pa.array(sorted(paths), pa.string())
    for part, table in read_parts(out, None, err):
        if part.name.startswith(f"part-{run}-") or "precision" not in table.column_names:
            continue
        stale = pc.fill_null(pc.and_kleene(
            pc.and_kleene(pc.equal(table["model"], model_id),
                          pc.equal(table["precision"], precision)),
            pc.and_kleene(pc.is_valid(table["error"]), pc.is_in(table["path"], wanted))),
            False)
        if not pc.any(stale).as_py():
            continue
        tmp = out / f".part-{run}-{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(table.filter(pc.invert(stale)), tmp)
            sync_and_rename(str(tmp), str(part))
        finally:
            tmp.unlink(missing_ok=True)


def archive(model: str | os.PathLike, out: str | os.PathLike, sources: list[str],
            scheduler: str | None = None, workers: int | None = None, resume: bool = False,
            batch: int = BATCH, err: TextIO | None = None) -> ArchiveTotals:
    """Classify every frame of ``sources`` on a Dask cluster into the dataset ``out``.

    Parameters
    ----------
    model : path
        The exported model; the workers must see it at the same path.
    scheduler : str, optional
        An existing scheduler's address (``tcp://host:8786``); else a LocalCluster of
        ``workers`` processes (default: one per usable CPU, one thread each).
    resume : bool
        Skip frames already decided in ``out`` by this model (id and precision) and try
        again those that failed; without it, an ``out`` that holds rows of this model is
        refused.
    """
    require_dask()
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
    with holding(out, err):
        return _archive(model, card, out, sources, scheduler, workers, resume, batch, err)


def _archive(model: str, card: ModelCard, out: Path, sources: list[str],
             scheduler: str | None, workers: int | None, resume: bool, batch: int,
             err: TextIO) -> ArchiveTotals:
    from distributed import Client

    from frameqc.runtime.archive.tasks import ModelPlugin
    from frameqc.runtime.model.cpu import available_cpus

    prev = previous(out, card.model_id, card.precision, err)
    if prev and not resume:
        raise UsageError(f"{out} already holds {len(prev)} frames for model {card.model_id} "
                         f"({card.precision}): add --resume to go on where it stopped, or "
                         "choose another folder")
    summary = ArchiveTotals()
    run = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    cluster = None
    t0 = time.perf_counter()
    if scheduler is None:
        cluster = local_cluster(workers or available_cpus())
    try:
        with Client(scheduler or cluster) as client:
            # a local worker's share of the CPUs; an external worker uses its own --nthreads
            threads = (max(1, available_cpus() // (workers or available_cpus()))
                       if scheduler is None else None)
            client.register_plugin(ModelPlugin(model, threads))
            summary.startup = time.perf_counter() - t0
            todo = batches(_not_done(sources, prev.decided, summary), batch)
            retried = _run_tasks(client, todo, out, run, prev, summary, err)
        if resume:
            supersede(out, run, card.model_id, card.precision, retried | prev.stale, err)
    finally:
        if cluster is not None:
            cluster.close()
        for tmp in out.glob(f".part-{run}-*.tmp"):  # this run's, left by a killed worker
            tmp.unlink(missing_ok=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def local_cluster(workers: int) -> LocalCluster:
    """A cluster of ``workers`` processes here, one thread each (:data:`LOCAL_WORKERS`)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(LOCAL_WORKERS):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=40)


def _run_tasks(client, todo: Iterable[list[str]], out: Path, run: str, prev: Previous,
               summary: ArchiveTotals, err: TextIO) -> set[str]:
    """Submit a task per batch, at most two per worker thread waiting, and count what each
    did as it ends; a task that failed is one line (once per cause). The frames that had
    failed before and were classified again by this run."""
    from distributed import as_completed

    from frameqc.runtime.archive.tasks import classify_batch

    retried: set[str] = set()
    slots = max(2, 2 * sum(client.nthreads().values()))
    progress = Progress("frames", None, err)
    pending = as_completed()
    tasks: dict[str, list[str]] = {}
    said: set[str] = set()

    def collect(fut) -> None:
        paths = tasks.pop(fut.key)
        try:
            summary.add(fut.result())
        except Exception as exc:  # what ended the task (OSError, KilledWorker...)
            summary.lost += len(paths)
            why = getattr(exc, "strerror", None) or first_line(exc)
            if why not in said:
                said.add(why)
                progress.say(f"frameqc archive: a task of {len(paths)} frames "
                             f"failed ({why}); its frames are not in OUT, the other "
                             "tasks go on")
        else:
            retried.update(p for p in paths if p in prev.failed)
        fut.release()
        progress.update(summary.frames + summary.skipped, f"{summary.errors} errors")

    for i, paths in enumerate(todo):
        fut = client.submit(classify_batch, paths, str(out), part_name(run, i),
                            key=f"frameqc-{run}-{i}", retries=2)
        tasks[fut.key] = paths
        pending.add(fut)
        while pending.count() >= slots:
            collect(next(pending))
    for fut in pending:
        collect(fut)
    progress.close()
    return retried


def _not_done(sources: list[str], done: set[str], summary: ArchiveTotals) -> Iterator[str]:
    for path in iter_sources(sources):
        if path in done:
            summary.skipped += 1
        else:
            yield path
