"""Argument types shared by every command (runtime and export): checked at parse time.

A nonsense value (a zero timeout, a negative interval, a threshold of 2) is a usage
error with a one-line message before anything starts, never a busy loop or a traceback.
"""

from __future__ import annotations

import argparse
import math


def _number(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {value!r}")
    return x


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {value!r}")
    return int(value)


def positive_float(value: str) -> float:
    x = _number(value)
    if x <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, not {value!r}")
    return x


def non_negative_float(value: str) -> float:
    x = _number(value)
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value!r}")
    return x


def probability(value: str) -> float:
    """A threshold: in (0, 1]."""
    x = _number(value)
    if not 0.0 < x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {value!r}")
    return x


def fraction(value: str) -> float:
    """Strictly between 0 and 1 (a share held out)."""
    x = _number(value)
    if not 0.0 < x < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value!r}")
    return x
