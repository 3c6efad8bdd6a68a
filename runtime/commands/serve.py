"""``frameqc serve``: the model loaded once, answering on a local socket (and TCP)."""

from __future__ import annotations

import argparse
import os

from frameqc.runtime.commands.common import model_args, sender_args
from frameqc.runtime.commands.options import positive_float, positive_int

HELP = "keep the model loaded and answer on a local socket (and TCP)"


def add_parser(sub) -> None:
    from frameqc.runtime.serving.protocol import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT

    p = sub.add_parser(
        "serve", help=HELP,
        description="Load the model once and classify for clients: 'frameqc classify' uses "
                    "the local socket by itself; --tcp also speaks the upstream wobble "
                    "protocol (8-byte big-endian length, image bytes -> 'label p').",
        epilog="examples:\n  frameqc serve --model /models/touse2.onnx &\n"
               "  kill -HUP PID   # reload the model (also done when the model path names "
               "a new file)\n"
               "  frameqc classify --model /models/touse2.onnx FRAME.fits   # answered by it\n"
               "  frameqc serve --model wobble.onnx --tcp 127.0.0.1:8225 --log serve.log\n\n"
               "default socket: $FRAMEQC_SOCKET, else $XDG_RUNTIME_DIR/frameqc.sock, "
               "else /tmp/frameqc-UID/frameqc.sock")
    model_args(p)
    p.add_argument("--socket", metavar="PATH", help="unix socket path (mode 0660)")
    p.add_argument("--tcp", metavar="HOST:PORT",
                   help="also serve the upstream TCP protocol (host defaults to 127.0.0.1)")
    p.add_argument("--log", metavar="FILE",
                   help="one JSON line per frame to FILE (default: a short line on stderr)")
    p.add_argument("--max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                   metavar="N", help=f"largest TCP image accepted (default {DEFAULT_MAX_BYTES})")
    p.add_argument("--timeout", type=positive_float, default=DEFAULT_TIMEOUT, metavar="S",
                   help="seconds a whole request may take to arrive, idle wait included "
                        f"(default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--allow", action="append", metavar="DIR",
                   help="only classify frames under DIR for local clients (repeatable; "
                        "default: any file the server can read)")
    sender_args(p, resident=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.model import resolve_model_path
    from frameqc.runtime.senders import Senders
    from frameqc.runtime.serving.protocol import default_socket
    from frameqc.runtime.serving.server import check_options, serve

    for d in args.allow or ():
        if not os.path.isdir(d):
            raise UsageError(f"--allow {d}: not a directory")
    check_options(args.tcp, args.log)
    path = Path(resolve_model_path(args.model))
    socket = Path(args.socket or default_socket())
    Senders.check(args)  # before the model is touched
    senders = Senders.from_args(args, None, args.log)  # alert labels: the served card's
    try:
        return serve(path, socket, args.tcp, args.log, args.max_bytes, args.timeout,
                     allow=tuple(args.allow or ()), threads=args.threads,
                     senders=senders.items)
    finally:
        senders.close()
