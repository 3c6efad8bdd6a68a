"""Where frameqc keeps what it may rebuild: the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FRAMEQC_CACHE"


def cache_dir() -> Path:
    """``$FRAMEQC_CACHE``, else ``$XDG_CACHE_HOME/frameqc``, else ``~/.cache/frameqc``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "frameqc"
