"""``frameqc status``: ask a running server how it is (a health check)."""

from __future__ import annotations

import argparse

from frameqc.runtime.commands.common import EXIT_OK

HELP = "ask a running server how it is"


def add_parser(sub) -> None:
    p = sub.add_parser("status", help=HELP,
                       description="Print a running server's model, uptime and counters; "
                                   "exit 2 when no server answers (a health check).",
                       epilog="example:\n  frameqc status --json")
    p.add_argument("--socket", metavar="PATH", help="server socket (default: as serve)")
    p.add_argument("--json", action="store_true")


def describe(status: dict) -> str:
    """A server's status as one line for a person."""
    card = status["card"]
    reloads = status.get("reloads", 0)  # a server from before reloading has no count
    text = (f"frameqc {status['version']} pid {status['pid']} up {status['uptime']:.0f} s: "
            f"{status['model']['path']} ({', '.join(card['labels'])}, {card['precision']}"
            f"{' on ' + status['engine'] if 'engine' in status else ''}, "
            f"model {status['model_id']}{f', reloaded {reloads}x' if reloads else ''}); "
            f"{status['requests']} requests, {status['frames']} frames, "
            f"{status['errors']} errors; {', '.join(status['endpoints'])}")
    for sink in status.get("sinks", ()):
        counts = ", ".join(f"{k} {v}" for k, v in sink.items()
                           if isinstance(v, int) and not isinstance(v, bool))
        down = f"; down: {sink['down']}" if sink.get("down") else ""
        text += f"; {sink.get('sink', 'sink')}: {counts}{down}"
    return text


def run(args: argparse.Namespace) -> int:
    import json

    from frameqc.runtime.serving.client import connect
    from frameqc.runtime.serving.protocol import default_socket

    conn = connect(args.socket or default_socket(), None)
    status = conn.status
    conn.close()
    print(json.dumps(status, indent=2) if args.json else describe(status))
    return EXIT_OK
