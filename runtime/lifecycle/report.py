"""``frameqc evaluate --report DIR``: a static page a person opens from disk.

``DIR/index.html`` holds the figures and confusion matrices of every model evaluated;
``DIR/threshold.png`` plots each alert label's precision and recall against the
threshold; ``DIR/mistakes/`` holds the 224x224 images the network saw for frames it got
wrong, shown with their probabilities. No server, script or network is needed.

Plots need matplotlib (``pip install 'frameqc[report]'``); the rest of the runtime does not.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from pathlib import Path

from frameqc.runtime import __version__
from frameqc.runtime.errors import UsageError
from frameqc.runtime.lifecycle.evaluation import Evaluation

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:.25em .7em;border:1px solid #ddd;
text-align:right} th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.conf td.hit{font-weight:bold} .muted{color:#777} .grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:232px;font-size:12px;word-break:break-all}
figure img{width:224px;height:224px;image-rendering:pixelated;border:4px solid #c33}
"""


def write_report(evaluations: Sequence[Evaluation], directory: str | os.PathLike,
                 data_name: str) -> Path:
    """Write the page and its images into ``directory``; returns the path of index.html.

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
            body.append('<h2>Alert threshold</h2><p>Precision and recall of each alert label '
                        'if <code>frameqc classify --threshold T</code> had been used; the '
                        'dotted line is the threshold in the model card.</p>'
                        '<img src="threshold.png" alt="precision and recall against threshold"'
                        ' width="760">')
        for k, ev in enumerate(evaluations):
            body.append(_model_section(ev, k, out))
        page = (f"<!doctype html><html lang=en><meta charset=utf-8>"
                f"<title>frameqc evaluation: {html.escape(data_name)}</title>"
                f"<style>{CSS}</style><body>{''.join(body)}"
                f"<p class=muted>frameqc {__version__}, "
                f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}</p></body></html>\n")
        index = out / "index.html"
        tmp = out / ".index.html.tmp"
        tmp.write_text(page)
        os.replace(tmp, index)
    except OSError as exc:
        raise UsageError(f"cannot write the report in {out} ({exc.strerror or exc})") from None
    return index


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a UsageError saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("the report needs matplotlib: pip install 'frameqc[report]'") from None
    return plt


def _summary(evaluations: Sequence[Evaluation], data_name: str) -> str:
    first = evaluations[0]
    counts = ", ".join(f"{html.escape(t)}: {sum(1 for x in first.truths if x == t)}"
                       for t in first.labels)
    rows = []
    for ev in evaluations:
        best = ev.best_threshold()
        rows.append(f"<tr><td>{html.escape(ev.model)}</td><td>{ev.precision}</td>"
                    f"<td>{ev.n}</td><td>{len(ev.failed)}</td><td>{ev.accuracy:.3f}</td>"
                    f"<td>{ev.threshold:g}</td><td>{'-' if best is None else f'{best:g}'}"
                    f"</td><td>{len(_wrong(ev))}</td></tr>")
    return (f"<h1>frameqc evaluation</h1><p>{html.escape(data_name)}: {first.n} labelled "
            f"frames ({counts}).</p><table><tr><th>model</th><th>precision</th><th>frames"
            "</th><th>not read</th><th>accuracy</th><th>threshold</th><th>best threshold</th>"
            f"<th>mistakes</th></tr>{''.join(rows)}</table>")


def _model_section(ev: Evaluation, k: int, out: Path) -> str:
    from PIL import Image

    per = ev.per_label()
    label_rows = "".join(
        f"<tr><td>{html.escape(lab)}</td><td>{v['support']}</td><td>{v['precision']:.3f}</td>"
        f"<td>{v['recall']:.3f}</td><td>{v['f1']:.3f}</td></tr>" for lab, v in per.items())
    conf = ev.confusion()
    peak = max((v for row in conf.values() for v in row.values()), default=0) or 1
    cells = []
    for t in ev.labels:
        tds = "".join(
            f'<td class="{"hit" if t == s else ""}" style="background:'
            f'rgba(40,90,200,{0.08 + 0.5 * conf[t][s] / peak:.2f})">{conf[t][s]}</td>'
            for s in ev.labels)
        cells.append(f"<tr><th>{html.escape(t)}</th>{tds}</tr>")
    heads = "".join(f"<th>{html.escape(s)}</th>" for s in ev.labels)
    figures = []
    for i, m in enumerate(ev.mistakes):
        name = f"mistakes/m{k}_{i:03d}.png"
        Image.fromarray(m.preview).save(out / name)
        probs = ", ".join(f"{html.escape(lab)} {p:.3f}" for lab, p in m.probabilities.items())
        figures.append(f'<figure><img src="{name}" alt="{html.escape(m.path)}"><figcaption>'
                       f"<b>{html.escape(m.truth)}</b>, said <b>{html.escape(m.said)}</b><br>"
                       f"{probs}<br><span class=muted>{html.escape(m.path)}</span>"
                       "</figcaption></figure>")
    wrong = len(_wrong(ev))
    shown = (f"{len(ev.mistakes)} of {wrong} shown" if wrong > len(ev.mistakes)
             else f"{wrong}")
    failed = "".join(f"<li>{html.escape(p)}: {html.escape(e)}</li>" for p, e in ev.failed)
    return (f"<h2>{html.escape(ev.model)}</h2><p class=muted>{ev.precision}, model "
            f"{ev.model_id or '-'}, threshold {ev.threshold:g}</p>"
            f"<table><tr><th>label</th><th>frames</th><th>precision</th><th>recall</th>"
            f"<th>F1</th></tr>{label_rows}</table>"
            f"<h3>Confusion (rows: true label; columns: decided)</h3>"
            f"<table class=conf><tr><th></th>{heads}</tr>{''.join(cells)}</table>"
            f"<h3>Mistakes ({shown}): what the network saw</h3>"
            f"<div class=grid>{''.join(figures) or '<p>none</p>'}</div>"
            + (f"<h3>Not classified</h3><ul>{failed}</ul>" if failed else ""))


def _wrong(ev: Evaluation) -> list[int]:
    return [i for i, (t, s) in enumerate(zip(ev.truths, ev.said, strict=True)) if t != s]


def _threshold_plot(plt, evaluations: Sequence[Evaluation], target: Path) -> bool:
    """Precision (solid) and recall (dashed) of every alert label against the threshold."""
    curves = [(ev, ev.sweep()) for ev in evaluations if ev.alerts and ev.n]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(7.6, 4.2), dpi=100)
    for k, (ev, rows) in enumerate(curves):
        colour = f"C{k}"
        xs = [r["threshold"] for r in rows]
        for a in ev.alerts:
            tag = f"{Path(ev.model).name}: {a}"
            ax.plot(xs, [r[a]["precision"] for r in rows], "-", color=colour,
                    label=f"{tag} precision")
            ax.plot(xs, [r[a]["recall"] for r in rows], "--", color=colour,
                    label=f"{tag} recall")
        ax.axvline(ev.threshold, color=colour, linestyle=":", linewidth=1)
    ax.set_xlabel("alert threshold")
    ax.set_ylabel("precision / recall")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(target)
    plt.close(fig)
    return True
