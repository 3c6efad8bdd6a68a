"""One updating progress line on a terminal (rate and time left), nothing elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``[done/total] what, rate/s, ETA`` on one line of a terminal; silent when piped.

    Every long command (demo, evaluate, archive, train, classify) reports through this,
    so a log file never fills with carriage returns and a terminal always shows the
    same form.
    """

    def __init__(self, what: str = "frames", total: int | None = None,
                 stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.what, self.total = what, total
        self.started = time.perf_counter()
        self.shown = False

    def update(self, done: int, note: str = "") -> None:
        """Show ``done`` items (of ``total`` when known), with rate and time left."""
        if not self.tty:
            return
        elapsed = time.perf_counter() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = f"[{done}/{self.total}]" if self.total else f"[{done}]"
        line += f" {self.what}, {rate:.1f}/s"
        if self.total and rate and done < self.total:
            line += f", ETA {_duration((self.total - done) / rate)}"
        if note:
            line += f", {note}"
        self.say(line, done=False)

    def say(self, text: str, done: bool = True) -> None:
        """A step's line: kept on a terminal when ``done``, printed once when piped."""
        if self.tty:
            self.stream.write(f"\r\033[K{text}" + ("\n" if done else ""))
            self.shown = not done
        elif done:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Wipe the updating line, leaving the terminal as it was."""
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
