"""Decisions where the observatory already looks: InfluxDB points and alert hooks.

Each is an extra of :class:`~frameqc.runtime.output.sink.Sink` (a callable taking the
record and its timings) that works in a background thread, so it never slows or stops
classification. :class:`Extras` builds them from the options every deciding command
shares (``commands.common.sink_args``) and is what ``classify``, ``watch`` and
``serve`` hold: attach, health for ``status``, close at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
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


class Extras:
    """The further destinations a command's options ask for (possibly none)."""

    def __init__(self, items: list | None = None) -> None:
        self.items = list(items or [])

    @classmethod
    def from_args(cls, args: argparse.Namespace, model: str | os.PathLike | None,
                  beside: str | os.PathLike | None, err: TextIO | None = None,
                  state: str | os.PathLike | None = None) -> Extras:
        """``--influx``/``--influx-tag``, ``--on-alert``/``--alert-after``/``--alert-timeout``.

        ``model`` gives the alert labels (its card); ``beside`` places the spool, and
        the ``--alert-after`` streak unless there is a ``state`` (watch's) to keep it by.
        Everything that can be refused is refused here, before any frame.
        """
        err = err or sys.stderr
        items: list = []
        if getattr(args, "influx", None):
            from frameqc.runtime.sinks.sender import InfluxSender

            items.append(InfluxSender(args.influx, spool_beside(beside), tags(args), err))
        if getattr(args, "on_alert", None):
            from frameqc.runtime.sinks.hooks import AlertHook, parse_command, streak_beside

            parse_command(args.on_alert)  # before the model is touched
            try:
                items.append(AlertHook(args.on_alert, alert_labels(model),
                                       getattr(args, "alert_after", None), args.alert_timeout, err,
                                       streak_beside(state or beside)))
            except BaseException:
                cls(items).close()
                raise
        return cls(items)

    def attach(self, sink) -> None:
        sink.extras.extend(self.items)

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
    from frameqc.runtime.sinks.influx import parse_tag

    return dict(parse_tag(t) for t in given)


def alert_labels(model: str | os.PathLike | None) -> tuple[str, ...]:
    """The card's alert labels, read from the model file without loading it."""
    from frameqc.runtime.errors import ModelError
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.session import resolve_model_path

    path = resolve_model_path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    card = read_card(path)
    if card is None:
        raise ModelError(f"{path}: cannot read its model card")
    return card.alerts
