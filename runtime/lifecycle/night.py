"""``frameqc night``: the night at a glance, a page and a picture made from the records.

The records come from where frameqc already writes them: the JSON-lines ``--log`` of
``serve``, ``watch`` and ``classify``, and the Parquet datasets of ``archive``. Nothing
is classified again. :func:`load` reads them, :func:`select` picks the night (or the
last hours), :func:`build` writes ``DIR/index.html`` and ``DIR/night.png`` with the
page machinery the evaluation report uses.

Thumbnails (the 224x224 images the network saw) are made once per frame version and
kept in ``DIR/seen/``, keyed by the frame's path, size and mtime and the recipe; a frame
that has moved or cannot be read keeps its row, without an image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from frameqc.runtime.data.facts import header_facts
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.lifecycle.page import (
    Html,
    esc,
    facts,
    image,
    page,
    pyplot,
    table,
    write_page,
)
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.output.record import night_of

#: Where thumbnails are kept in the output folder.
SEEN = "seen"
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


# -- thumbnails ---------------------------------------------------------------------------

class Thumbnails:
    """The images the network saw, made once per frame version and kept in ``DIR/seen``.

    With a model, its card's recipe; without, the default recipe of the frame's kind
    (asinh for FITS with its default percentiles, rgb for JPEG/PNG). A frame that cannot
    be read is remembered as such (``.none``) until it changes; one that has moved is
    looked for again at the next build.
    """

    def __init__(self, out: Path, card: ModelCard | None) -> None:
        from frameqc.runtime.model.recipes import AsinhRecipe, RGBRecipe, make_recipe

        self.dir = out / SEEN
        self.recipes = ([make_recipe(card.recipe, card.input_size)] if card is not None
                        else [AsinhRecipe(), RGBRecipe()])
        self.made = 0

    def _key(self, path: str) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        ident = [os.path.abspath(path), st.st_size, st.st_mtime_ns,
                 [r.params() for r in self.recipes]]
        return hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:20]

    def get(self, path: str) -> tuple[str | None, dict[str, str]]:
        """(the thumbnail's path relative to DIR, or None; the frame's header facts)."""
        key = self._key(path)
        if key is None:
            return None, {}
        png, meta = self.dir / f"{key}.png", self.dir / f"{key}.json"
        if meta.exists():
            try:
                known = json.loads(meta.read_text())
                return (f"{SEEN}/{png.name}" if known["image"] else None), known["facts"]
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is made again
        made = self._make(path, png)
        found = header_facts(path)
        self.dir.mkdir(exist_ok=True)
        meta.write_text(json.dumps({"path": path, "image": made, "facts": found}))
        return (f"{SEEN}/{png.name}" if made else None), found

    def _make(self, path: str, png: Path) -> bool:
        from PIL import Image

        from frameqc.runtime.data.reader import read_frame

        try:
            frame = read_frame(path)
            recipe = next((r for r in self.recipes if frame.kind in r.kinds), self.recipes[0])
            preview = recipe.prepare(frame).preview()
        except (FrameError, UsageError, MemoryError):
            return False
        self.dir.mkdir(exist_ok=True)
        tmp = png.with_name(f".{png.name}.tmp")
        Image.fromarray(preview).save(tmp, format="PNG")
        os.replace(tmp, png)
        self.made += 1
        return True


# -- the picture --------------------------------------------------------------------------

ALERT, DOUBT, OTHER, FAIL = "#d62728", "#ff9900", "#8c8c8c", "#222222"


def headline(s: Summary) -> str:
    """The one line a person reads first."""
    return (f"{s.decided} frames, {s.alerts} alerts ({100 * s.rate:.1f} %), "
            f"{s.doubtful} doubtful, {s.failed} failed")


def draw(s: Summary, nights: list[tuple[str, int, int]], target: Path) -> None:
    """night.png: alert probability over the night, counts per label, and the trend."""
    plt = pyplot("frameqc night")
    from matplotlib import dates as mdates

    rows = 3 if len(nights) > 1 else 2
    fig = plt.figure(figsize=(11, 3.2 * rows + 0.6), dpi=100)
    grid = fig.add_gridspec(rows, 4, height_ratios=[3, *([2] * (rows - 1))])
    fig.suptitle(f"frameqc — {s.name}: {headline(s)}", fontsize=14, fontweight="bold",
                 color=ALERT if s.alerts or s.failed else "black")
    ax = fig.add_subplot(grid[0, :])
    decided = [r for r in s.records if r.get("error") is None and when(r) is not None]
    groups = (("other frames", OTHER, 18, lambda r: not r.get("doubtful") and
               r.get("label") not in s.rule.alerts),
              ("doubtful", DOUBT, 60, lambda r: bool(r.get("doubtful"))),
              ("alert", ALERT, 60, lambda r: r.get("label") in s.rule.alerts))
    for name, colour, size, keep in groups:
        pts = [r for r in decided if keep(r)]
        if pts:
            ax.scatter([when(r) for r in pts], [s.rule.p_alert(r) for r in pts], s=size,
                       color=colour, label=f"{name} ({len(pts)})", zorder=3,
                       edgecolors="black" if name != "other frames" else "none",
                       linewidths=0.5)
    failed = [when(r) for r in s.records if r.get("error") is not None and when(r)]
    if failed:
        ax.scatter(failed, [-0.06] * len(failed), marker="x", s=40, color=FAIL,
                   label=f"failed ({len(failed)})", zorder=3)
    if s.rule.threshold is not None:
        ax.axhline(s.rule.threshold, color=ALERT, linestyle="--", linewidth=1.2)
        ax.annotate(f"threshold {s.rule.threshold:g}", (0.005, s.rule.threshold),
                    xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 4), color=ALERT, fontsize=10)
    ax.set_ylim(-0.12, 1.04)
    ax.set_ylabel(f"p({', '.join(s.rule.alerts) or 'alert'})", fontsize=11)
    ax.set_xlabel("DATE-OBS (UTC)", fontsize=11)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(alpha=0.3)
    if decided or failed:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=10, frameon=False)
    else:
        ax.text(0.5, 0.5, "no frames yet", transform=ax.transAxes, ha="center", fontsize=16)
    bars = fig.add_subplot(grid[1, :2])
    labels = [*sorted(s.counts, key=str), *(["failed"] if s.failed else [])]
    values = [s.counts[lab] for lab in labels[:len(s.counts)]] + ([s.failed] if s.failed
                                                                   else [])
    colours = [ALERT if lab in s.rule.alerts else FAIL if lab == "failed" and s.failed
               else "#4a78c2" for lab in labels]
    bars.barh([str(lab) for lab in labels], values, color=colours)
    for y, v in enumerate(values):
        bars.annotate(str(v), (v, y), xytext=(4, 0), textcoords="offset points",
                      va="center", fontsize=11, fontweight="bold")
    bars.set_title("frames per label", fontsize=11)
    bars.set_xlim(0, max(values, default=1) * 1.18 + 1)
    bars.tick_params(labelsize=11)
    info = fig.add_subplot(grid[1, 2:])
    info.axis("off")
    lines = [(f"alert rate {100 * s.rate:.1f} %", ALERT if s.alerts else "black"),
             (f"doubtful {s.doubtful}", DOUBT if s.doubtful else "black"),
             (f"failed {s.failed}", ALERT if s.failed else "black")]
    for y, (text, colour) in enumerate(lines):
        info.text(0.02, 0.92 - 0.2 * y, text, va="top", fontsize=17, fontweight="bold",
                  color=colour, transform=info.transAxes)
    models = ", ".join(f"{m} {p} ({n})" for (m, p), n in s.models.most_common(3))
    info.text(0.02, 0.2, f"model{'s' if len(s.models) > 1 else ''}: {models or '-'}",
              va="top", fontsize=11, transform=info.transAxes, wrap=True)
    if rows == 3:
        tr = fig.add_subplot(grid[2, :])
        xs = [datetime.fromisoformat(n) for n, _, _ in nights]
        rates = [100 * a / d if d else 0 for _, d, a in nights]
        tr.plot(xs, rates, "-o", color="#4a78c2", markersize=4)
        mine = [(x, r) for x, r, (n, _, _) in zip(xs, rates, nights, strict=True)
                if f"night of {n}" == s.name]
        if mine:
            tr.plot(*zip(*mine, strict=True), "o", color=ALERT, markersize=9)
        locator = mdates.AutoDateLocator(maxticks=10)
        tr.xaxis.set_major_locator(locator)
        tr.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        tr.set_ylabel("alert rate (%)", fontsize=11)
        tr.set_title("alert rate per night", fontsize=11)
        tr.set_ylim(bottom=0)
        tr.grid(alpha=0.3)
    fig.tight_layout()
    tmp = target.with_name(f".{target.name}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, target)


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
    pyplot("frameqc night")  # before any work: say what is missing
    loaded = load(sources)
    labels = {k for r in loaded.records for k in (r.get("probabilities") or {})}
    rule = Rule.of(card, labels)
    name, chosen = select(loaded.records, on, last)
    s = Summary.of(name, chosen, rule, loaded.torn)
    nights = trend(loaded.records, rule)
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
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
