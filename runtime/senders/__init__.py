"""The senders: decisions sent where the observatory already looks, InfluxDB points and
alert hooks.

Each is a destination of :class:`~frameqc.runtime.output.destinations.Destinations` (a
callable taking the record and its timings) that works in a background thread, so it
never slows or stops classification. :class:`Senders` builds them from the options every
deciding command shares (``commands.common.sender_args``) and is what ``classify``,
``watch`` and ``serve`` hold: their items to the destinations, health for ``status``,
close at the end. They sit above :mod:`~frameqc.runtime.output`, whose encodings they use.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from pathlib import Path

SPOOL_SUFFIX = ".influx-spool"


def spool_beside(path: str | os.PathLike | None) -> Path:
    """Where undelivered points wait: beside ``path`` (the log or the watch state), else
    in the cache folder."""
    from pathlib import Path

    from frameqc.runtime.util.paths import cache_dir

    if path is None:
        return cache_dir() / f"frameqc{SPOOL_SUFFIX}"
    path = Path(path)
    return path.with_name(path.name + SPOOL_SUFFIX)


class Senders:
    """The senders a command's options ask for (possibly none): each a destination of
    :class:`~frameqc.runtime.output.destinations.Destinations` working in a thread."""

    def __init__(self, items: list | None = None) -> None:
        self.items = list(items or [])

    @staticmethod
    def check(args: argparse.Namespace) -> None:
        """Refuse a bad ``--influx`` URL or ``--on-alert`` command before the model is
        touched (one line, exit 2)."""
        if getattr(args, "influx", None):
            from frameqc.runtime.senders.influx_api import write_url

            write_url(args.influx)
        if getattr(args, "on_alert", None):
            from frameqc.runtime.senders.hooks import parse_command

            parse_command(args.on_alert)

    @classmethod
    def from_args(cls, args: argparse.Namespace, alerts: Sequence[str] | None,
                  beside: str | os.PathLike | None, err: TextIO | None = None,
                  state: str | os.PathLike | None = None) -> Senders:
        """``--influx``/``--influx-tag``, ``--on-alert``/``--alert-after``/``--alert-timeout``.

        ``alerts`` are the card's alert labels (None: the served card's, told later);
        ``beside`` places the spool, and the ``--alert-after`` streak unless there is a
        ``state`` (watch's) to keep it by. ``watch`` keeps its streak file without
        ``--alert-after`` too: it takes frames again, and the file says which alert ran.
        Everything that can be refused is refused here, before any frame.
        """
        err = err or sys.stderr
        items: list = []
        if getattr(args, "influx", None):
            from frameqc.runtime.senders.influx import InfluxSender

            items.append(InfluxSender(args.influx, spool_beside(beside), tags(args), err))
        if getattr(args, "on_alert", None):
            from frameqc.runtime.senders.hooks import AlertHook
            from frameqc.runtime.senders.streak import streak_beside

            after = getattr(args, "alert_after", None)
            kept = streak_beside(state or beside) if after is not None or state else None
            try:
                items.append(AlertHook(args.on_alert, alerts, after, args.alert_timeout, err,
                                       kept))
            except BaseException:
                cls(items).close()
                raise
        return cls(items)

    def health(self) -> list[dict]:
        return [item.health() for item in self.items]

    def close(self) -> None:
        """Deliver what waits (bounded), report in one line what could not be."""
        for item in self.items:
            item.close()


def tags(args: argparse.Namespace) -> dict[str, str]:
    """The operator's ``--influx-tag K=V`` pairs (for ``--influx`` and ``--format influx``)."""
    given = getattr(args, "influx_tag", None)
    if not given:  # the usual case imports nothing: a one-shot's path stays light
        return {}
    from frameqc.runtime.output.line_protocol import parse_tag

    return dict(parse_tag(t) for t in given)
