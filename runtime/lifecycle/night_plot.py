"""night.png: the night as one picture, for the night page and pages that embed PNGs.

The alert probability of every frame over the night (alerts red, doubtful ringed in
orange, failed frames as crosses, the threshold drawn; a frame without a usable DATE-OBS
at the time it was logged, in a blue square when others have one, and the axis says
which clock it shows), the frames per label, the alert rate, and with several nights the
alert rate per night. Drawn with matplotlib's Figure
(no pyplot) in a fixed layout, and only when what it shows has changed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

from frameqc.runtime import __version__
from frameqc.runtime.lifecycle.night import Summary, axis_label, headline, placed, when
from frameqc.runtime.lifecycle.page import new_figure
from frameqc.runtime.util.files import atomic_file, write_atomic

ALERT, DOUBT, OTHER, FAIL, LOGGED = "#d62728", "#ff9900", "#8c8c8c", "#222222", "#1f77b4"


def picture_digest(s: Summary, nights: list[tuple[str, int, int]]) -> str:
    """What night.png shows, as a digest: an unchanged night is not drawn again."""
    points = [(str(placed(r)), r.get("label"), r.get("doubtful"), s.rule.p_alert(r),
               r.get("error") is not None) for r in s.records]
    shown = [__version__, s.name, headline(s), s.rule.alerts, s.rule.threshold,
             sorted(s.models.items()), points, nights]
    return hashlib.sha1(json.dumps(shown, default=str).encode()).hexdigest()


def draw(s: Summary, nights: list[tuple[str, int, int]], target: Path) -> bool:
    """night.png: alert probability over the night, counts per label, and the trend.

    Returns False when the picture was already there, of the same figures (a cron run
    with nothing new then costs no matplotlib import and no drawing). The picture and its
    digest are written whole, under new names (util.files), so two runs on one folder
    and a link planted there are harmless.
    """
    stamp = target.with_name(f".{target.name}.digest")
    digest = picture_digest(s, nights)
    try:
        with stamp.open("rb") as fh:  # a few bytes: whatever a shared folder holds there
            if target.exists() and fh.read(64) == digest.encode():
                return False
    except OSError:
        pass
    rows = 3 if len(nights) > 1 else 2
    height = 3.2 * rows + 0.6
    fig = new_figure("frameqc night", figsize=(11, height), dpi=100)
    # a fixed layout: tight_layout would draw the whole figure once more to measure it
    grid = fig.add_gridspec(rows, 4, height_ratios=[3, *([2] * (rows - 1))], left=0.07,
                            right=0.81, top=1 - 0.75 / height, bottom=0.55 / height,
                            hspace=0.45, wspace=0.3)
    fig.suptitle(f"frameqc — {s.name}: {headline(s)}", fontsize=14, fontweight="bold",
                 color=ALERT if s.alerts or s.failed else "black")
    _timeline(fig.add_subplot(grid[0, :]), s)
    _per_label(fig.add_subplot(grid[1, :2]), s)
    _figures(fig.add_subplot(grid[1, 2:]), s)
    if rows == 3:
        _trend(fig.add_subplot(grid[2, :]), s, nights)
    with atomic_file(target) as fh:
        fig.savefig(fh, format="png")
    write_atomic(stamp, digest)
    return True


def _timeline(ax, s: Summary) -> None:
    """Each frame's alert probability at the time it is placed at (DATE-OBS, else logged)."""
    from matplotlib import dates as mdates

    decided = [r for r in s.records if r.get("error") is None and when(r) is not None]
    others = [r for r in decided if r.get("label") not in s.rule.alerts]
    alerts = [r for r in decided if r.get("label") in s.rule.alerts]
    doubtful = [r for r in decided if r.get("doubtful")]
    if others:
        ax.scatter([when(r) for r in others], [s.rule.p_alert(r) for r in others], s=18,
                   color=OTHER, label=f"not an alert ({len(others)})", zorder=3)
    if alerts:
        ax.scatter([when(r) for r in alerts], [s.rule.p_alert(r) for r in alerts], s=60,
                   color=ALERT, edgecolors="black", linewidths=0.5,
                   label=f"alert ({len(alerts)})", zorder=4)
    if doubtful:  # a ring around the point: a doubtful alert stays red inside
        ax.scatter([when(r) for r in doubtful], [s.rule.p_alert(r) for r in doubtful], s=170,
                   facecolors="none", edgecolors=DOUBT, linewidths=2.2,
                   label=f"doubtful ({len(doubtful)})", zorder=5)
    logged = [r for r in decided if placed(r)[1] == "logged"]
    if logged and len(logged) < len(decided):  # some points on another clock: marked
        ax.scatter([when(r) for r in logged], [s.rule.p_alert(r) for r in logged],
                   marker="s", s=110, facecolors="none", edgecolors=LOGGED, linewidths=1.2,
                   label=f"time logged ({len(logged)})", zorder=2)
    failed = [when(r) for r in s.records if r.get("error") is not None and when(r)]
    if failed:
        ax.scatter(failed, [-0.06] * len(failed), marker="x", s=40, color=FAIL,
                   label=f"failed, time logged ({len(failed)})", zorder=3)
    if s.rule.threshold is not None:
        ax.axhline(s.rule.threshold, color=ALERT, linestyle="--", linewidth=1.2)
        ax.annotate(f"threshold {s.rule.threshold:g}", (0.005, s.rule.threshold),
                    xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, 4), color=ALERT, fontsize=10)
    ax.set_ylim(-0.12, 1.04)
    ax.set_ylabel(f"p({', '.join(s.rule.alerts) or 'alert'})", fontsize=11)
    ax.set_xlabel(axis_label(placed(r)[1] for r in decided), fontsize=11)
    times = [mdates.date2num(t) for t in [*(when(r) for r in decided), *failed]]
    if times and max(times) - min(times) < 1 / 1440:  # one frame, or seconds apart: a
        mid = (max(times) + min(times)) / 2  # minute (matplotlib alone spans years)
        ax.set_xlim(mid - 1 / 2880, mid + 1 / 2880)
    locator = mdates.AutoDateLocator(maxticks=12)  # seconds apart: the seconds are shown
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(
        locator, formats=["%Y", "%b", "%d %b", "%H:%M", "%H:%M", "%H:%M:%S"]))
    ax.grid(alpha=0.3)
    if decided or failed:
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=10, frameon=False)
    else:
        ax.text(0.5, 0.5, "no frames yet", transform=ax.transAxes, ha="center", fontsize=16)
        ax.set_xticks([])


def _per_label(bars, s: Summary) -> None:
    """Frames per label (alert labels red), failed frames last."""
    labels = [*sorted(s.counts, key=str), *(["failed"] if s.failed else [])]
    values = [s.counts[lab] for lab in labels[:len(s.counts)]] + ([s.failed] if s.failed
                                                                   else [])
    colours = [ALERT if lab in s.rule.alerts else FAIL if lab == "failed" and s.failed
               else "#4a78c2" for lab in labels]
    bars.barh([str(lab) for lab in labels], values, color=colours)
    for y, v in enumerate(values):
        bars.annotate(str(v), (v, y), xytext=(4, 0), textcoords="offset points",
                      va="center", fontsize=12)
    bars.set_title("frames per label", fontsize=11)
    bars.set_xlim(0, max(values, default=1) * 1.18 + 1)
    if not values:
        bars.axis("off")
    bars.tick_params(labelsize=11)


def _figures(info, s: Summary) -> None:
    """The night's rates in large type, and the models that decided."""
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


def _trend(tr, s: Summary, nights: list[tuple[str, int, int]]) -> None:
    """The alert rate per night, this night marked."""
    from matplotlib import dates as mdates

    xs = [datetime.fromisoformat(n) for n, _, _ in nights]
    rates = [100 * a / d if d else 0 for _, d, a in nights]
    few = len(nights) <= 16
    tr.plot(xs, rates, "-o" if few else "-", color="#4a78c2", markersize=4,
            linewidth=1.5 if few else 0.8)
    mine = [(x, r) for x, r, (n, _, _) in zip(xs, rates, nights, strict=True)
            if f"night of {n}" == s.name]
    if mine:
        tr.plot(*zip(*mine, strict=True), "o", color=ALERT, markersize=9)
    if few:  # a few nights: each one named, with its rate
        tr.set_xticks(xs, [x.strftime("%d %b") for x in xs])
        for x, r in zip(xs, rates, strict=True):
            tr.annotate(f"{r:.1f} %", (x, r), xytext=(0, 7), textcoords="offset points",
                        ha="center", fontsize=9)
        tr.set_ylim(0, max(rates) * 1.25 + 1)
    else:  # years from the archive: dates as the span needs them
        locator = mdates.AutoDateLocator(maxticks=10)
        tr.xaxis.set_major_locator(locator)
        tr.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        tr.set_ylim(bottom=0)
    tr.set_ylabel("alert rate (%)", fontsize=11)
    tr.set_title("alert rate per night", fontsize=11)
    tr.grid(alpha=0.3)
