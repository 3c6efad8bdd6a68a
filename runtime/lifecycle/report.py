"""``frameqc evaluate --report DIR``: a static page a person opens from disk.

``DIR/index.html`` holds the figures and confusion matrices of every model evaluated;
``DIR/threshold.png`` plots each alert label's precision and recall against the
threshold over the range the sweep covers, the best threshold marked; ``DIR/mistakes/``
holds the 224x224 images the network saw for frames it got wrong, and, when models are
compared, for frames on which two models disagree, each shown with its probabilities and
header facts (DATE-OBS, filter, exposure). No server, script or network is needed.

Written with the project's one page machinery (:mod:`frameqc.runtime.lifecycle.page`),
which the night page shares. Plots need matplotlib (``pip install 'frameqc[report]'``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from frameqc.runtime.data.facts import header_facts
from frameqc.runtime.errors import UsageError
from frameqc.runtime.lifecycle.evaluation import Evaluation
from frameqc.runtime.lifecycle.page import (
    Html,
    esc,
    facts,
    figure,
    image,
    page,
    pyplot,
    table,
    write_page,
    write_png,
)
from frameqc.runtime.util.files import atomic_file


def write_report(evaluations: Sequence[Evaluation], directory: str | os.PathLike,
                 data_name: str, limit: int = 60) -> Path:
    """Write the page and its images into ``directory``; returns the path of index.html.

    ``limit`` caps the frames shown where two models disagree (mistakes are capped by
    :func:`~frameqc.runtime.lifecycle.evaluation.evaluate`).

    Raises
    ------
    UsageError
        matplotlib is not installed, or ``directory`` cannot be written.
    """
    plt = pyplot()
    out = Path(directory)
    try:
        (out / "mistakes").mkdir(parents=True, exist_ok=True)
        curve = _threshold_plot(plt, evaluations, out / "threshold.png")
        body = [_summary(evaluations, data_name)]
        if curve:
            body.append('<h2>Alert threshold</h2><p>Precision (solid) and recall (dashed) of '
                        'each alert label if <code>frameqc classify --threshold T</code> had '
                        'been used; the dotted line is the threshold in the model card, the '
                        'star the best threshold (best mean F1).</p>'
                        '<img src="threshold.png" alt="precision and recall against threshold"'
                        ' style="max-width:100%">')
        for k, ev in enumerate(evaluations):
            body.append(_model_section(ev, k, out))
        for k, other in enumerate(evaluations[1:], 1):
            body.append(_disagreements(evaluations[0], other, k, out, limit))
        return write_page(out / "index.html", page(f"frameqc evaluation: {data_name}", body))
    except OSError as exc:
        raise UsageError(f"cannot write the report in {out} ({exc.strerror or exc})") from None


def model_name(ev: Evaluation) -> str:
    """How a page names a model: its file, its id and its weights (fp32 or int8)."""
    return f"{Path(ev.model).name} ({ev.model_id or 'no id'}, {ev.precision})"


def _summary(evaluations: Sequence[Evaluation], data_name: str) -> str:
    first = evaluations[0]
    counts = ", ".join(f"{t}: {sum(1 for x in first.truths if x == t)}" for t in first.labels)
    rows = []
    for ev in evaluations:
        best = ev.best_threshold()
        rows.append([Path(ev.model).name, ev.model_id or "-", ev.precision, ev.n,
                     len(ev.failed), f"{ev.accuracy:.3f}", sum(ev.doubtful), f"{ev.threshold:g}",
                     "-" if best is None else f"{best:g}", len(_wrong(ev))])
    return (f"<h1>frameqc evaluation</h1><p>{esc(data_name)}: {first.n} labelled "
            f"frames ({esc(counts)}).</p>"
            + table(["model", "id", "weights", "frames", "not read", "accuracy", "doubtful",
                     "threshold", "best threshold", "mistakes"], rows)
            + "<p class=muted>doubtful: the decision would change if the probabilities moved "
              "by the card's margin (the int8 gate's rule).</p>")


def _seen(ev: Evaluation, path: str, out: Path, name: str) -> str | None:
    """The image the network saw of ``path``, made again with the model's recipe."""
    from frameqc.runtime.lifecycle.seen import preview
    from frameqc.runtime.model.recipes import make_recipe

    seen = preview(path, [make_recipe(ev.recipe, ev.input_size)])
    if seen is None:
        return None
    write_png(out / name, seen)
    return name


def _probs(probabilities: dict[str, float]) -> str:
    return ", ".join(f"{lab} {p:.3f}" for lab, p in probabilities.items())


def _model_section(ev: Evaluation, k: int, out: Path) -> str:
    per = ev.per_label()
    label_rows = [[lab, v["support"], f"{v['precision']:.3f}", f"{v['recall']:.3f}",
                   f"{v['f1']:.3f}"] for lab, v in per.items()]
    conf = ev.confusion()
    peak = max((v for row in conf.values() for v in row.values()), default=0) or 1
    cells = []
    for t in ev.labels:
        tds = "".join(
            f'<td class="{"hit" if t == s else ""}" style="background:'
            f'rgba(40,90,200,{0.08 + 0.5 * conf[t][s] / peak:.2f})">{conf[t][s]}</td>'
            for s in ev.labels)
        cells.append(f"<tr><th>{esc(t)}</th>{tds}</tr>")
    heads = "".join(f"<th>{esc(s)}</th>" for s in ev.labels)
    figures = []
    for i, m in enumerate(ev.mistakes):
        name = f"mistakes/m{k}_{i:03d}.png"
        write_png(out / name, m.preview)
        doubt = Html(" <span class=doubt>doubtful</span>") if m.doubtful else ""
        figures.append(figure(image(name, m.path, m.doubtful), Html(
            f"<b>{esc(m.truth)}</b>, said <b>{esc(m.said)}</b>{doubt}<br>"
            f"{esc(_probs(m.probabilities))}<br>{facts(header_facts(m.path))}"
            f"<span class=muted>{esc(m.path)}</span>")))
    wrong = len(_wrong(ev))
    shown = (f"{len(ev.mistakes)} of {wrong} shown" if wrong > len(ev.mistakes)
             else f"{wrong}")
    failed = "".join(f"<li>{esc(p)}: {esc(e)}</li>" for p, e in ev.failed)
    return (f"<h2>{esc(model_name(ev))}</h2><p class=muted>{esc(ev.model)}, threshold "
            f"{ev.threshold:g}, {sum(ev.doubtful)} doubtful decisions</p>"
            + table(["label", "frames", "precision", "recall", "F1"], label_rows)
            + f"<h3>Confusion (rows: true label; columns: decided)</h3>"
            f"<table class=conf><tr><th></th>{heads}</tr>{''.join(cells)}</table>"
            f"<h3>Mistakes ({shown}): what the network saw</h3>"
            f"<div class=grid>{''.join(figures) or '<p>none</p>'}</div>"
            + (f"<h3>Not classified</h3><ul>{failed}</ul>" if failed else ""))


def disagreements(a: Evaluation, b: Evaluation) -> list[tuple[int, int]]:
    """Index pairs (in ``a``, in ``b``) of the frames both decided, differently."""
    where = {p: j for j, p in enumerate(b.paths)}
    return [(i, where[p]) for i, p in enumerate(a.paths)
            if p in where and a.said[i] != b.said[where[p]]]


def _disagreements(a: Evaluation, b: Evaluation, k: int, out: Path, limit: int) -> str:
    """The frames two models decide differently, as the first model's recipe shows them."""
    pairs = disagreements(a, b)
    rows = []
    for n, (i, j) in enumerate(pairs[:limit]):
        src = _seen(a, a.paths[i], out, f"mistakes/d{k}_{n:03d}.png")
        said = [Html(f"<b>{esc(ev.said[x])}</b>"
                     f"{' <span class=doubt>doubtful</span>' if ev.doubtful[x] else ''}<br>"
                     f"{esc(_probs(dict(zip(ev.labels, ev.probabilities[x], strict=True))))}")
                for ev, x in ((a, i), (b, j))]
        rows.append([image(src, a.paths[i]), Html(
            f"{facts(header_facts(a.paths[i]))}<span class=muted>{esc(a.paths[i])}</span>"),
            a.truths[i], *said])
    shown = f"{min(limit, len(pairs))} of {len(pairs)} shown" if len(pairs) > limit \
        else str(len(pairs))
    head = ["image", "frame", "true label", f"{Path(a.model).name} said",
            f"{Path(b.model).name} said"]
    return (f"<h2>Where {esc(model_name(a))} and {esc(model_name(b))} disagree ({shown})"
            f"</h2>" + (table(head, rows, "disagree") if rows else "<p>nowhere</p>"))


def _wrong(ev: Evaluation) -> list[int]:
    return [i for i, (t, s) in enumerate(zip(ev.truths, ev.said, strict=True)) if t != s]


def sweep_range(evaluations: Sequence[Evaluation]) -> tuple[float, float]:
    """The thresholds the sweeps cover (0.5-1 for two labels): the plot shows only these."""
    lows = [min(r["threshold"] for r in ev.sweep()) for ev in evaluations if ev.alerts and ev.n]
    return (min(lows) if lows else 0.0), 1.0


def _threshold_plot(plt, evaluations: Sequence[Evaluation], target: Path) -> bool:
    """Precision (solid) and recall (dashed) of every alert label against the threshold."""
    curves = [(ev, ev.sweep()) for ev in evaluations if ev.alerts and ev.n]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(10, 4.4), dpi=100)
    for k, (ev, rows) in enumerate(curves):
        colour = f"C{k}"
        xs = [r["threshold"] for r in rows]
        best = ev.best_threshold(rows)
        at_best = next(r for r in rows if r["threshold"] == best)
        name = f"{Path(ev.model).name} {ev.precision}"
        for a in ev.alerts:
            ax.plot(xs, [r[a]["precision"] for r in rows], "-", color=colour,
                    label=f"{name}: {a} precision")
            ax.plot(xs, [r[a]["recall"] for r in rows], "--", color=colour,
                    label=f"{name}: {a} recall")
        ax.plot([best] * 2 * len(ev.alerts),
                [v for a in ev.alerts for v in (at_best[a]["precision"], at_best[a]["recall"])],
                "*", color=colour, markersize=15, markeredgecolor="black",
                label=f"{name}: best threshold {best:g}")
        ax.axvline(ev.threshold, color=colour, linestyle=":", linewidth=1.2,
                   label=f"{name}: card threshold {ev.threshold:g}")
    lo, hi = sweep_range(evaluations)
    pad = 0.01 * (hi - lo)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("alert threshold")
    ax.set_ylabel("precision / recall")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_file(target) as fh:  # whole, under a new name: never a planted link
        fig.savefig(fh, format="png")
    plt.close(fig)
    return True
