"""``frameqc night``: the night at a glance, a page and a picture made from the records.

The records come from where frameqc already writes them: the JSON-lines ``--log`` of
``serve``, ``watch`` and ``classify``, and the Parquet datasets of ``archive``. Nothing
is classified again. :func:`load` reads them, :func:`select` picks the night (or the
last hours), :func:`build` writes ``DIR/index.html`` and ``DIR/night.png`` with the
page machinery the evaluation report uses.

Thumbnails (the 224x224 images the network saw, :mod:`~frameqc.runtime.lifecycle.seen`)
are made once per frame version and kept in ``DIR/seen/``; a frame that has moved or
cannot be read keeps its row, without an image. The picture is drawn by
:mod:`~frameqc.runtime.lifecycle.night_plot`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from frameqc.runtime.errors import UsageError
from frameqc.runtime.lifecycle.page import (
    Html,
    esc,
    facts,
    image,
    need_matplotlib,
    page,
    table,
    write_page,
)
from frameqc.runtime.lifecycle.seen import Thumbnails
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.output.record import night_of

#: The alert labels assumed when no model is given: every label but this one.
NOT_ALERT = "OK"


@dataclass
class Records:
    """Every record read from the sources, and the lines that were not records."""

    records: list[dict] = field(default_factory=list)
    torn: int = 0  # log lines that were not a record (torn by a crash, foreign, blank)


def load(sources: Sequence[str | os.PathLike]) -> Records:
    """Read JSON-lines logs and Parquet datasets (a ``.parquet`` file or a folder of them).

    A frame decided more than once (a retry, two logs) counts once: its last record.
    pyarrow is imported only when a Parquet source is given.
    """
    out = Records()
    by_path: dict[str, dict] = {}
    for source in sources:
        path = Path(source)
        parquet = path.is_dir() or path.suffix == ".parquet"
        for rec in _parquet(path) if parquet else _log(path, out):
            by_path.pop(rec["path"], None)  # the last record is the one that counts
            by_path[rec["path"]] = rec
    out.records = list(by_path.values())
    return out


def _log(path: Path, out: Records) -> list[dict]:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    recs = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("path"), str) and (
                isinstance(rec.get("probabilities"), dict) or "error" in rec):
            recs.append(rec)
        else:
            out.torn += 1
    return recs


def _parquet(path: Path) -> list[dict]:
    """An ``archive`` dataset's flat rows as records (``p_<label>`` -> probabilities)."""
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise UsageError(f"{path}: reading Parquet needs pyarrow: pip install "
                         "'frameqc[dask]'") from None
    if path.is_dir() and not any(path.rglob("*.parquet")):
        raise UsageError(f"{path}: a folder, but no Parquet dataset (no *.parquet in it)")
    try:
        rows = ds.dataset(str(path), format="parquet").to_table().to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise UsageError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0]})"
                         ) from None
    recs = []
    for row in rows:
        probs = {k[2:]: v for k, v in row.items() if k.startswith("p_") and v is not None}
        rec = {k: v for k, v in row.items() if not k.startswith("p_") and v is not None}
        if row.get("error") is None:
            rec["probabilities"] = probs
        recs.append(rec)
    return recs


def when(rec: dict) -> datetime | None:
    """When the frame was taken (UTC, naive): DATE-OBS, else (a failed frame) when logged."""
    if rec.get("date_obs"):
        try:
            return datetime.fromisoformat(str(rec["date_obs"]).strip()[:19])
        except ValueError:
            return None
    try:
        logged = datetime.fromisoformat(str(rec.get("time")))
    except ValueError:
        return None
    return logged.astimezone(UTC).replace(tzinfo=None) if logged.tzinfo else logged


def night(rec: dict) -> str | None:
    """The observing night of a record (``night``, else from its time; see night_of)."""
    if rec.get("night"):
        return str(rec["night"])
    t = when(rec)
    return None if t is None else night_of(t.isoformat())


def parse_span(text: str) -> timedelta:
    """``--last``: a number and a unit, s, m, h or d (``12h``, ``90m``)."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    try:
        amount = float(text[:-1])
        if text[-1] not in units or not amount > 0:
            raise ValueError
    except (ValueError, IndexError):
        raise UsageError(f"--last {text!r}: give a duration such as 12h, 90m or 2d") from None
    return timedelta(**{units[text[-1]]: amount})


def select(records: Iterable[dict], on: str | None = None, last: timedelta | None = None,
           now: datetime | None = None) -> tuple[str, list[dict]]:
    """The records of one night (``on``; default the latest night there is) or of the last
    ``last`` before ``now`` (UTC), ordered by time, and how the selection is named."""
    records = list(records)
    if last is not None:
        now = now or datetime.now(UTC).replace(tzinfo=None)
        start = now - last
        chosen = [r for r in records if (t := when(r)) is not None and start <= t <= now]
        name = f"{start:%Y-%m-%d %H:%M} to {now:%H:%M} UTC"
    else:
        on = on or max((n for r in records if (n := night(r))), default=None)
        chosen = [r for r in records if on is not None and night(r) == on]
        name = f"night of {on}" if on else "no night yet"
    return name, sorted(chosen, key=lambda r: (when(r) or datetime.min, r["path"]))


@dataclass
class Rule:
    """What the page calls an alert, and the threshold it draws."""

    alerts: tuple[str, ...]
    threshold: float | None

    @classmethod
    def of(cls, card: ModelCard | None, labels: Iterable[str]) -> Rule:
        """The model card's rule; without one, every label but OK, no threshold drawn."""
        if card is not None:
            return cls(card.alerts, card.threshold)
        return cls(tuple(sorted(lab for lab in set(labels) if lab != NOT_ALERT)), None)

    def p_alert(self, rec: dict) -> float:
        probs = rec.get("probabilities") or {}
        return max((probs.get(a, 0.0) for a in self.alerts), default=0.0)


@dataclass
class Summary:
    """One selection's figures: what the page and the picture say."""

    name: str
    records: list[dict]
    rule: Rule
    counts: Counter = field(default_factory=Counter)
    failed: int = 0
    alerts: int = 0
    doubtful: int = 0
    models: Counter = field(default_factory=Counter)
    torn: int = 0  # log lines skipped, in all the sources

    @classmethod
    def of(cls, name: str, records: list[dict], rule: Rule, torn: int = 0) -> Summary:
        s = cls(name, records, rule, torn=torn)
        for r in records:
            s.models[(r.get("model") or "-", r.get("precision") or "-")] += 1
            if "error" in r and r["error"] is not None:
                s.failed += 1
                continue
            s.counts[r.get("label")] += 1
            s.alerts += r.get("label") in rule.alerts
            s.doubtful += bool(r.get("doubtful"))
        return s

    @property
    def decided(self) -> int:
        return len(self.records) - self.failed

    @property
    def rate(self) -> float:
        return self.alerts / self.decided if self.decided else 0.0

    def flagged(self) -> list[dict]:
        """The frames a person should look at: alerts and doubtful decisions, in time order."""
        return [r for r in self.records if r.get("label") in self.rule.alerts
                or r.get("doubtful")]


def trend(records: Iterable[dict], rule: Rule) -> list[tuple[str, int, int]]:
    """(night, frames decided, alerts) of every night in the records, oldest first."""
    per: dict[str, list[int]] = {}
    for r in records:
        n = night(r)
        if n is None or r.get("error") is not None or "label" not in r:
            continue
        row = per.setdefault(n, [0, 0])
        row[0] += 1
        row[1] += r["label"] in rule.alerts
    return [(n, d, a) for n, (d, a) in sorted(per.items())]


def headline(s: Summary) -> str:
    """The one line a person reads first."""
    return (f"{s.decided} frames, {s.alerts} alerts ({100 * s.rate:.1f} %), "
            f"{s.doubtful} doubtful, {s.failed} failed")


# -- the page -----------------------------------------------------------------------------

def _probs(rec: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in (rec.get("probabilities") or {}).items())


def _flagged_rows(s: Summary, thumbs: Thumbnails) -> list[list]:
    rows = []
    for r in s.flagged():
        src, found = thumbs.get(r["path"])
        alert = r.get("label") in s.rule.alerts
        said = Html(f"<span class={'alert' if alert else 'doubt'}>{esc(r.get('label'))}</span>"
                    + (" <span class=doubt>doubtful</span>" if r.get("doubtful") else ""))
        link = Html(f'<a href="{esc(Path(r["path"]).absolute().as_uri())}">'
                    f"{esc(r['path'])}</a>")
        t = when(r)
        rows.append([image(src, r["path"], not alert), Html(
            f"<b>{esc(t.strftime('%H:%M:%S') if t else '-')}</b><br>{said}<br>"
            f"{esc(_probs(r))}<br>{facts(found)}{link}")])
    return rows


def build(sources: Sequence[str | os.PathLike], out: str | os.PathLike,
          card: ModelCard | None = None, on: str | None = None,
          last: timedelta | None = None, refresh: float | None = None) -> Summary:
    """Write ``out/index.html`` and ``out/night.png`` for the chosen night; returns its figures.

    Raises
    ------
    UsageError
        A source cannot be read, matplotlib is missing, or ``out`` cannot be written.
    """
    need_matplotlib("frameqc night")  # before any work: say what is missing
    loaded = load(sources)
    labels = {k for r in loaded.records for k in (r.get("probabilities") or {})}
    rule = Rule.of(card, labels)
    name, chosen = select(loaded.records, on, last)
    s = Summary.of(name, chosen, rule, loaded.torn)
    nights = trend(loaded.records, rule)
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
        from frameqc.runtime.lifecycle.night_plot import draw  # it imports this module

        draw(s, nights, target / "night.png")
        thumbs = Thumbnails(target, card)
        body = [f"<h1>frameqc: {esc(name)}</h1>",
                f"<p class=big>{esc(headline(s))}</p>",
                table(["label", "frames"], [[lab, n] for lab, n in sorted(
                    s.counts.items(), key=lambda kv: str(kv[0]))] + [["failed", s.failed]],
                      "counts"),
                table(["model", "precision", "frames"],
                      [[m, p, n] for (m, p), n in s.models.most_common()], "models"),
                '<img src="night.png" alt="the night: alert probability over time, '
                'frames per label, alert rate per night" style="max-width:100%">',
                f"<h2>Alerts and doubtful frames ({len(s.flagged())})</h2>"]
        rows = _flagged_rows(s, thumbs)
        body.append(table(["what the network saw", "frame"], rows, "flagged") if rows
                    else "<p>none</p>")
        if len(nights) > 1:
            body.append("<h2>Alert rate per night</h2>" + table(
                ["night", "frames", "alerts", "alert rate"],
                [[n, d, a, f"{100 * a / d:.1f} %" if d else "-"] for n, d, a in
                 reversed(nights)], "trend"))
        notes = f"{len(loaded.records)} frames in {len(sources)} source(s)"
        if loaded.torn:
            notes += f"; {loaded.torn} log lines were not records and were skipped"
        if rule.threshold is None:
            notes += (f"; no model given: alerts are every label but {NOT_ALERT}, "
                      "no threshold drawn")
        body.append(f"<p class=muted>{esc(notes)}</p>")
        write_page(target / "index.html", page(f"frameqc: {name}", body, refresh))
    except OSError as exc:
        raise UsageError(f"cannot write the night in {target} ({exc.strerror or exc})"
                         ) from None
    return s
