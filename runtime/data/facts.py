"""A frame's header facts for a person: when it was taken, through what, for how long.

Pages show these beside the image the network saw (``evaluate --report``, ``night``, the
labelling app): they are the first things one checks on a suspicious frame. One reader
for all of them (:func:`header_keywords`): the reader's own header walk, which reads
headers only, within the reader's limits, and no astropy (its card parsing would hold
the interpreter while a page waits).
"""

from __future__ import annotations

import os

#: The keywords read, as the header names them (the labelling app shows them so).
KEYWORDS = ("DATE-OBS", "OBJECT", "EXPTIME", "FILTER", "FILTER1", "FILTER2", "FILTER3")

#: What the report and night pages show, in order, with the name they give it (IO:O's
#: FILTER1 before the generic FILTER).
SHOWN = (("DATE-OBS", "DATE-OBS"), ("FILTER1", "filter"), ("FILTER", "filter"),
         ("EXPTIME", "exposure"), ("OBJECT", "object"))


def header_keywords(path: str | os.PathLike) -> dict[str, str]:
    """:data:`KEYWORDS` of a FITS frame (plain, gzip or bzip2), the image HDU's winning
    over the primary's (an fpacked frame keeps them in its extension); empty when the
    file is unreadable or not FITS, never a failure."""
    import bz2
    import gzip

    from frameqc.runtime.data.fitswalk import check_fits_sizes
    from frameqc.runtime.data.reader import max_pixels, open_regular

    try:
        with open_regular(path) as fh:
            magic = fh.read(3)
            fh.seek(0)
            stream = (gzip.GzipFile(fileobj=fh) if magic[:2] == b"\x1f\x8b" else
                      bz2.BZ2File(fh) if magic == b"BZh" else fh)
            found = check_fits_sizes(stream, max_pixels())
    except Exception:  # not FITS, moved, damaged, a bad limit: no facts
        return {}
    facts: dict[str, str] = {}
    for cards in (found.cards, found.primary) if found else ():
        for key in KEYWORDS:
            value = cards.get(key, "").strip().strip("'").strip()
            if value and key not in facts:
                facts[key] = value
    return facts


def header_facts(path: str | os.PathLike) -> dict[str, str]:
    """DATE-OBS, filter, exposure and object of a FITS frame, as the report and night
    pages name them (:data:`SHOWN`); empty when unreadable or no FITS."""
    found: dict[str, str] = {}
    keywords = header_keywords(path)
    for key, name in SHOWN:
        value = keywords.get(key)
        if value and name not in found:
            found[name] = _exposure(value) if name == "exposure" else value
    return found


def _exposure(value: str) -> str:
    """Seconds as a person reads them: ``30.0`` is ``30 s``."""
    try:
        return f"{float(value):g} s"
    except ValueError:
        return value
