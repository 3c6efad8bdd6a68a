"""How frameqc says things: one-line reasons and timestamps, in one form everywhere."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one line for an operator: its first line, else its type's name."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def local_time() -> str:
    """Now, local time with its UTC offset (``2025-07-08T23:10:04+0000``): log lines."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second: provenance and run names."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
