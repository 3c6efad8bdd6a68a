"""The records ``frameqc night`` reads: JSON-lines logs and ``archive``'s Parquet, streamed.

Each log line and Parquet row is checked against the record's own definition
(:func:`~frameqc.runtime.output.record.is_record`, types included); what is not a record
(torn by a crash, another tool's, damaged, nested past the parser, another schema) is
counted per source, never fatal. Logs are read line by line and Parquet batch by batch,
so a season of nights in one source is never held whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output.record import is_record

#: A log line longer than this is not a record (one is about 500 bytes): it is skipped
#: without being held whole.
LONGEST_LINE = 1 << 20


@dataclass
class Skipped:
    """What a source held that was not a record: counted, shown, never fatal."""

    lines: int = 0  # log lines: torn by a crash, another tool's, damaged, blank
    rows: int = 0  # Parquet rows: another schema, damaged values
    files: int = 0  # Parquet files of a folder that cannot be read (cut by a crash)

    def __bool__(self) -> bool:
        return bool(self.lines or self.rows or self.files)

    def __str__(self) -> str:
        said = [f"{n} {what} were not records and were skipped" for n, what in
                ((self.lines, "log lines"), (self.rows, "Parquet rows")) if n]
        if self.files:
            said.append(f"{self.files} Parquet files could not be read and were skipped")
        return "; ".join(said)


def read(sources: Sequence[str | os.PathLike], skipped: dict[str, Skipped]
         ) -> Iterator[dict]:
    """The records of JSON-lines logs and Parquet datasets (a ``.parquet`` file or a folder
    of them), one at a time, in the sources' order; what is not a record is counted in
    ``skipped`` by source. pyarrow is imported only when a Parquet source is given."""
    for source in sources:
        path = Path(source)
        count = skipped.setdefault(str(source), Skipped())
        if path.is_dir() or path.suffix == ".parquet":
            yield from _parquet(path, count)
        else:
            yield from _log(path, count)


def _log(path: Path, count: Skipped) -> Iterator[dict]:
    """A log's records, line by line. Bytes that are not UTF-8 (a file name from an old
    share) are kept as ``surrogateescape``, so the name still opens the file."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh:
        while line := fh.readline(LONGEST_LINE):
            if len(line) == LONGEST_LINE and not line.endswith(b"\n"):
                while (rest := fh.readline(LONGEST_LINE)) and not rest.endswith(b"\n"):
                    pass
                count.lines += 1
                continue
            try:
                rec = json.loads(line.decode("utf-8", "surrogateescape"))
            except (ValueError, RecursionError):  # a deeply nested line
                rec = None
            if is_record(rec):
                yield rec
            else:
                count.lines += 1


def _parquet(path: Path, count: Skipped) -> Iterator[dict]:
    """An ``archive`` dataset's flat rows as records (``p_<label>`` -> probabilities), file
    by file and batch by batch; hidden files (a part being written) are not read."""
    try:
        import pyarrow.parquet  # noqa: F401 -- said before any work when it is missing
    except ImportError:
        raise UsageError(f"{path}: reading Parquet needs pyarrow: pip install "
                         "'frameqc[dask]'") from None
    files = [path] if not path.is_dir() else sorted(
        p for p in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))
    if not files:
        raise UsageError(f"{path}: a folder, but no Parquet dataset (no *.parquet in it)")
    for file in files:
        try:
            for batch in _batches(file):
                for row in _rows(batch):
                    rec = _from_row(row)
                    if is_record(rec):
                        yield rec
                    else:
                        count.rows += 1
        except UsageError:
            if file == path:  # the file asked for: said, in one line
                raise
            count.files += 1  # one part of a folder: the others are read


def _batches(file: Path) -> Iterator:
    """A Parquet file's record batches, one at a time (a file is never read whole)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        yield from pq.ParquetFile(file).iter_batches(batch_size=8192)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UsageError(f"{file}: cannot read as Parquet ({str(exc).splitlines()[0]})"
                         ) from None


def _rows(batch) -> list[dict]:
    """A batch's rows; text that is not UTF-8 (a file name) read with surrogateescape."""
    try:
        return batch.to_pylist()
    except UnicodeDecodeError:
        import pyarrow as pa

        columns = {}
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                column = [None if b is None else b.decode("utf-8", "surrogateescape")
                          for b in column.cast(pa.binary()).to_pylist()]
            else:
                column = column.to_pylist()
            columns[name] = column
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(),
                                                                          strict=True)]


def _from_row(row: dict) -> dict:
    if isinstance(row.get("path"), bytes):  # a name stored as bytes: the name on disk
        row["path"] = os.fsdecode(row["path"])
    probs = {k[2:]: v for k, v in row.items() if k.startswith("p_") and v is not None}
    rec = {k: v for k, v in row.items() if not k.startswith("p_") and v is not None}
    if row.get("error") is None:
        rec["probabilities"] = probs
    return rec
