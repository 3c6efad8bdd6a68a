"""The one way frameqc writes HTML pages: ``evaluate --report`` and ``night`` share it.

A page is a title, a body of small fragments (:func:`table`, :func:`figure`) and one
style sheet (:data:`CSS`). Every value is escaped unless it is :class:`Html` already, so
a frame named ``<b>.fits`` cannot break a page. Pages are static: they open from disk or
from a web folder, with no script, server or network.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from frameqc.runtime import __version__
from frameqc.runtime.errors import UsageError
from frameqc.runtime.util.files import atomic_file, write_atomic

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0} td,th{padding:.25em .7em;border:1px solid #ddd;
text-align:right;vertical-align:top} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
table.flagged td,table.disagree td{text-align:left}
.conf td.hit{font-weight:bold} .muted{color:#777} .grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:232px;font-size:12px;word-break:break-all}
img.seen{width:224px;height:224px;image-rendering:pixelated;border:4px solid #c33}
img.seen.doubt{border-color:#e90} .noimg{width:224px;height:224px;display:flex;
align-items:center;justify-content:center;background:#eee;color:#777;border:4px dashed #bbb}
.big{font-size:1.25em} .alert{color:#c33;font-weight:bold} .doubt{color:#b60;font-weight:bold}
.facts{font-size:12px;color:#444}
"""


class Html(str):
    """Markup that is already safe: placed in a page as it is."""


#: What a page cannot show as it is: control characters, and the lone surrogates a file
#: name that is not UTF-8 decodes to (``surrogateescape``) or a JSON log may hold.
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _escaped(m: re.Match) -> str:
    code = ord(m.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8: the byte, as Python writes it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str) -> str:
    """Text as a person reads it: a name's bytes that are not UTF-8 and control characters
    as backslash escapes (``x\\xff.fits``), so a page is always valid UTF-8."""
    return _UNSHOWN.sub(_escaped, text)


def esc(value: object) -> Html:
    """A value as page text, escaped (Html passes through)."""
    return value if isinstance(value, Html) else Html(html.escape(shown(str(value))))


def table(head: Iterable[object], rows: Iterable[Iterable[object]], cls: str = "") -> Html:
    """A table: a header row and rows of cells (escaped unless :class:`Html`)."""
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                  for row in rows)
    return Html(f"<table{f' class={cls}' if cls else ''}><tr>{ths}</tr>{trs}</table>")


def image(src: str | None, alt: str, doubtful: bool = False) -> Html:
    """The 224x224 image the network saw, or a grey square saying it cannot be shown."""
    if src is None:
        return Html('<div class=noimg>no image</div>')
    return Html(f'<img src="{esc(src)}" class="seen{" doubt" if doubtful else ""}" '
                f'alt="{esc(alt)}" width=224 height=224>')


def facts(values: Mapping[str, str]) -> Html:
    """Header facts (DATE-OBS, filter, exposure) as small lines beside an image."""
    return Html("<div class=facts>" + "<br>".join(f"{esc(k)}: {esc(v)}" for k, v in
                                                   values.items()) + "</div>")


def figure(img: Html, caption: Html) -> Html:
    return Html(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")


def page(title: str, body: Iterable[str], refresh: float | None = None) -> str:
    """A whole page: title, style, body, and the frameqc version and time it was made."""
    meta = f'<meta http-equiv=refresh content="{refresh:g}">' if refresh else ""
    return (f"<!doctype html><html lang=en><meta charset=utf-8>{meta}"
            f"<title>{esc(title)}</title><style>{CSS}</style><body>{''.join(body)}"
            f"<p class=muted>frameqc {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
            "</p></body></html>\n")


def write_page(path: str | os.PathLike, text: str) -> Path:
    """Write a page whole or not at all (a browser refreshing never sees half of it)."""
    write_atomic(path, text)
    return Path(path)


def write_png(path: str | os.PathLike, pixels) -> None:
    """An image (a uint8 array) as a PNG, written whole under a new name (util.files)."""
    from PIL import Image

    with atomic_file(path) as fh:
        Image.fromarray(pixels).save(fh, format="PNG")


def need_matplotlib(what: str) -> None:
    """Fail before any work when matplotlib is missing, without paying for its import."""
    from importlib.util import find_spec

    if find_spec("matplotlib") is None:
        raise UsageError(f"{what} needs matplotlib: pip install 'frameqc[report]'")


def new_figure(what: str, **kwargs):
    """A matplotlib Figure drawn by Agg, without pyplot (no global state, a lighter import)."""
    need_matplotlib(what)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def pyplot(what: str = "the report"):
    """matplotlib's pyplot on the file-only Agg backend, or a UsageError saying how to get it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"{what} needs matplotlib: pip install 'frameqc[report]'") from None
    return plt
