"""``frameqc night``: the night at a glance, a page and a picture made from the records.

The records come from where frameqc already writes them: the JSON-lines ``--log`` of
``serve``, ``watch`` and ``classify``, and the Parquet datasets of ``archive``. Nothing
is classified again. :mod:`~frameqc.runtime.lifecycle.night_sources` streams them (each
line checked against the record's definition; what is not a record is counted),
:func:`select` keeps only what the night (or the last hours) and the trend need,
:func:`build` writes ``DIR/index.html`` and ``DIR/night.png`` with the page machinery
the evaluation report uses.

Thumbnails (the 224x224 images the network saw, :mod:`~frameqc.runtime.lifecycle.seen`)
are made once per frame version and kept in ``DIR/seen/``; a frame that has moved or
cannot be read keeps its row, without an image. The picture is drawn by
:mod:`~frameqc.runtime.lifecycle.night_plot`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from frameqc.runtime.errors import UsageError
from frameqc.runtime.lifecycle.night_sources import Skipped, read
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
from frameqc.runtime.output.record import YEARS, night_at, night_of, observed
from frameqc.runtime.util.text import on_disk

#: The alert labels assumed when no model is given: every label but this one.
NOT_ALERT = "OK"


def placed(rec: dict) -> tuple[datetime | None, str]:
    """When the frame was taken (UTC, naive), and by which clock: its DATE-OBS when that
    names a night and a time, else (no DATE-OBS, an absurd one, a failed frame) the time
    it was logged; (None, "none") for a Parquet row without DATE-OBS."""
    date_obs = rec.get("date_obs")
    when = observed(date_obs)
    if when is not None and night_at(when) is not None:  # one reading of DATE-OBS
        return when, "DATE-OBS"
    try:
        logged = datetime.fromisoformat(rec["time"])
        logged = logged.astimezone(UTC).replace(tzinfo=None) if logged.tzinfo else logged
    except (KeyError, TypeError, ValueError, OverflowError):  # 0001-01-01T00:30+01:00
        return None, "none"
    return (logged, "logged") if logged.year in YEARS else (None, "none")


def when(rec: dict) -> datetime | None:
    """When the frame was taken, as :func:`placed` places it."""
    return placed(rec)[0]


def night(rec: dict) -> str | None:
    """The observing night of a record: its ``night`` when that is a night, else the night
    of the time it is placed at (see :func:`placed` and ``night_at``)."""
    said = rec.get("night")
    if said and night_of(said) == said:
        return said
    t = when(rec)
    return None if t is None else night_at(t)


def axis_label(clocks: Iterable[str]) -> str:
    """What the time axis shows, from the clocks of its points (see :func:`placed`)."""
    clocks = set(clocks) - {"none"}
    if clocks == {"logged"}:
        return "time logged (UTC): no DATE-OBS"
    if "logged" in clocks:
        return "DATE-OBS, else time logged (UTC)"
    return "DATE-OBS (UTC)"


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


@dataclass
class Chosen:
    """What the page needs of all the sources: the chosen frames' records in full, and of
    every frame only its night and label (for the trend), read in one pass.

    A frame decided more than once (a retry, two logs) counts once: its last record. Only
    the records that may be shown are held: those of the night asked for, of the span, or
    by default of the latest night so far that is not after tonight (a clock set years
    ahead does not take the page). Every other frame is known by the 64-bit hash of its
    path (about 100 bytes a frame instead of 200; two frames of a million share one with
    a chance of about 1 in 30 million, and would then count once in the trend).
    """

    name: str
    records: list[dict]
    frames: dict[int, tuple[str | None, str | None]]  # hash(path) -> (night, label or None)
    labels: set[str]
    skipped: dict[str, Skipped]
    tonight: str

    @property
    def total(self) -> int:
        return len(self.frames)

    def ahead(self) -> int:
        """Frames whose night is after tonight: a clock ahead, left out of the trend."""
        return sum(n is not None and n > self.tonight for n, _ in self.frames.values())


def select(sources: Sequence[str | os.PathLike], on: str | None = None,
           last: timedelta | None = None, now: datetime | None = None) -> Chosen:
    """The records of one night (``on``; default the latest night there is) or of the last
    ``last`` before ``now`` (UTC), ordered by time, read from ``sources`` as a stream."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    start = now - last if last is not None else None
    tonight = night_at(now)
    skipped: dict[str, Skipped] = {}
    shown: dict[str, tuple[str | None, dict]] = {}  # path -> (night, record)
    frames: dict[int, tuple[str | None, str | None]] = {}
    labels: set[str] = set()
    names: dict[str, str] = {}  # one copy of each night and label among 100,000s of frames
    pairs: dict[tuple, tuple] = {}  # and of each (night, label)
    best = None  # the default: the latest night so far
    for rec in read(sources, skipped):
        n = night(rec)
        n = names.setdefault(n, n) if n else None
        label = None if rec.get("error") is not None else names.setdefault(
            rec["label"], rec["label"])
        frames[hash(rec["path"])] = pairs.setdefault((n, label), (n, label))
        labels.update(rec.get("probabilities") or ())
        shown.pop(rec["path"], None)  # the last record is the one that counts
        if start is not None:
            keep = (t := when(rec)) is not None and start <= t <= now
        elif on is not None:
            keep = n == on
        else:
            keep = n is not None and n <= tonight and (best is None or n >= best)
            if keep and n != best:
                best = n
                shown = {p: v for p, v in shown.items() if v[0] == best}
        if keep:
            shown[rec["path"]] = (n, rec)
    if start is not None:
        name = f"{start:%Y-%m-%d %H:%M} to {now:%H:%M} UTC"
    else:
        on = on or best
        name = f"night of {on}" if on else "no night yet"
    chosen = sorted((rec for _, rec in shown.values()),
                    key=lambda r: (when(r) or datetime.min, r["path"]))
    return Chosen(name, chosen, frames, labels, skipped, tonight)


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
    clocks: Counter = field(default_factory=Counter)  # the chosen frames per clock (placed)
    skipped_in: dict[str, Skipped] = field(default_factory=dict)  # by source

    @classmethod
    def of(cls, name: str, records: list[dict], rule: Rule,
           skipped: dict[str, Skipped] | None = None) -> Summary:
        s = cls(name, records, rule, skipped_in=skipped or {})
        for r in records:
            s.models[(r.get("model") or "-", r.get("precision") or "-")] += 1
            s.clocks[placed(r)[1]] += 1
            if r.get("error") is not None:
                s.failed += 1
                continue
            s.counts[r.get("label")] += 1
            s.alerts += r.get("label") in rule.alerts
            s.doubtful += bool(r.get("doubtful"))
        return s

    @property
    def skipped(self) -> Skipped:
        """What was not a record, in all the sources."""
        return Skipped(*(sum(getattr(k, what) for k in self.skipped_in.values())
                         for what in ("lines", "rows", "files")))

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


def trend(frames: dict[int, tuple[str | None, str | None]], rule: Rule, until: str
          ) -> list[tuple[str, int, int]]:
    """(night, frames decided, alerts) of every night of ``frames`` (see :class:`Chosen`)
    up to the night ``until``, oldest first."""
    per: dict[str, list[int]] = {}
    alerts = set(rule.alerts)
    for n, label in frames.values():
        if n is None or label is None or n > until:
            continue
        row = per.setdefault(n, [0, 0])
        row[0] += 1
        row[1] += label in alerts
    return [(n, d, a) for n, (d, a) in sorted(per.items())]


def headline(s: Summary) -> str:
    """The one line a person reads first."""
    return (f"{s.decided} frames, {s.alerts} alerts ({100 * s.rate:.1f} %), "
            f"{s.doubtful} doubtful, {s.failed} failed")


# -- the page -----------------------------------------------------------------------------

def _probs(rec: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in (rec.get("probabilities") or {}).items())


def _link(path: str) -> Html:
    """The frame's name, linked to its file (not linked when no file can have that name)."""
    try:
        uri = Path(path).absolute().as_uri()
    except ValueError:  # a lone surrogate from a JSON escape: no bytes on disk name it
        return esc(path)
    return Html(f'<a href="{esc(uri)}">{esc(path)}</a>')


def _flagged_rows(s: Summary, thumbs: Thumbnails) -> list[list]:
    rows = []
    for r in s.flagged():
        path = on_disk(r["path"])  # a name --log wrote x\xff.fits: the file x<ff>.fits
        src, found = thumbs.get(path)
        alert = r.get("label") in s.rule.alerts
        said = Html(f"<span class={'alert' if alert else 'doubt'}>{esc(r.get('label'))}</span>"
                    + (" <span class=doubt>doubtful</span>" if r.get("doubtful") else ""))
        link = _link(path)
        t, clock = placed(r)
        clock = " <span class=muted>(time logged)</span>" if clock == "logged" else ""
        rows.append([image(src, r["path"], not alert), Html(
            f"<b>{esc(t.strftime('%H:%M:%S') if t else '-')}</b>{clock}<br>{said}<br>"
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
    chosen = select(sources, on, last)
    rule = Rule.of(card, chosen.labels)
    name = chosen.name
    s = Summary.of(name, chosen.records, rule, chosen.skipped)
    nights = trend(chosen.frames, rule, chosen.tonight)
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
        notes = f"{chosen.total} frames in {len(sources)} source(s)"
        if s.skipped:
            notes += f"; {s.skipped}"
        if ahead := chosen.ahead():
            notes += f"; {ahead} frames dated after tonight (a clock ahead?) are not in the trend"
        if s.clocks["logged"]:
            notes += (f"; {s.clocks['logged']} frames placed by the time they were logged "
                      "(no usable DATE-OBS)")
        if rule.threshold is None:
            notes += (f"; no model given: alerts are every label but {NOT_ALERT}, "
                      "no threshold drawn")
        body.append(f"<p class=muted>{esc(notes)}</p>")
        write_page(target / "index.html", page(f"frameqc: {name}", body, refresh))
    except OSError as exc:
        raise UsageError(f"cannot write the night in {target} ({exc.strerror or exc})"
                         ) from None
    return s
