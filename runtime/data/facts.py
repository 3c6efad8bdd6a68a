"""A frame's header facts for a person: when it was taken, through what, for how long.

Pages show these beside the image the network saw (``evaluate --report``, ``night``):
they are the first things one checks on a suspicious frame. Only headers are read.
"""

from __future__ import annotations

import os
import warnings

#: The keywords shown, in order, with the name a page gives them (IO:O's first, then the
#: generic FITS ones).
KEYWORDS = (("DATE-OBS", "DATE-OBS"), ("FILTER1", "filter"), ("FILTER", "filter"),
            ("EXPTIME", "exposure"), ("OBJECT", "object"))


def header_facts(path: str | os.PathLike) -> dict[str, str]:
    """DATE-OBS, filter, exposure and object of a FITS frame; empty when unreadable or no FITS.

    The image HDU's keywords win over the primary's (an fpacked frame keeps them in its
    extension).
    """
    from astropy.io import fits

    found: dict[str, str] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                headers = [hdul[0].header]
                if hdul[0].header.get("NAXIS", 0) == 0 and len(hdul) > 1:
                    headers.insert(0, hdul[1].header)
                for key, name in KEYWORDS:
                    value = next((h[key] for h in headers if key in h), None)
                    if value not in (None, "") and name not in found:
                        found[name] = f"{value:g} s" if name == "exposure" and isinstance(
                            value, (int, float)) else str(value).strip()
    except Exception:  # not FITS, moved, damaged: no facts, never a failure
        return {}
    return found
