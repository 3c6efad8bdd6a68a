"""``frameqc watch``: classify each new frame in a folder once, when it is complete."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from frameqc.runtime.commands.common import (
    EXIT_FRAME_FAILED,
    EXIT_OK,
    model_args,
    result_args,
    sender_args,
)
from frameqc.runtime.commands.options import non_negative_float, positive_float

if TYPE_CHECKING:
    from pathlib import Path

    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.serving.watch import Watcher

HELP = "classify each new frame in a folder once, when it is complete"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "watch", help=HELP,
        description="Watch an incoming folder: each frame is classified once, after it has "
                    "stopped changing, and what was done is remembered across restarts "
                    "(in a state file outside the folder). A frame is done once its decision "
                    "was written to the output and --log; if writing fails, a later scan "
                    "takes it again. One watch per state file: a second one (a cron --once "
                    "overlapping a slow run) says so in one line and exits 2. "
                    "Stops on SIGTERM/SIGINT.",
        epilog="examples:\n  frameqc watch --model /models/touse2.onnx /data/incoming "
               "--log classifier.log\n"
               "  frameqc watch --model m.onnx --once /data/incoming   # catch up, then exit")
    p.add_argument("dir", metavar="DIR")
    model_args(p)
    result_args(p)
    p.add_argument("--state", metavar="FILE",
                   help="what was done (default: under ~/.cache/frameqc/watch)")
    p.add_argument("--interval", type=positive_float, default=2.0, metavar="S",
                   help="seconds between scans (default 2)")
    p.add_argument("--settle", type=non_negative_float, default=2.0, metavar="S",
                   help="a frame unchanged this long is complete (default 2)")
    p.add_argument("--once", action="store_true",
                   help="scan once and exit (exit 1 if a frame failed; a failed frame is "
                        "tried again by the next run, 3 times at most)")
    sender_args(p, resident=True, spool="STATE.influx-spool beside the --state file")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.model import resolve_model_path
    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.senders import Senders, tags
    from frameqc.runtime.serving.watch import RETRY_AFTER, Watcher, default_state
    from frameqc.runtime.util.paths import cache_dir

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    destinations = Destinations(args.format, args.log, args.sort_into, tags=tags(args))
    destinations.check()
    path = Path(resolve_model_path(args.model))
    state = Path(args.state) if args.state else default_state(directory, cache_dir())
    Senders.check(args)  # before the model is touched
    classifier = Classifier.load(path, args.threads, threshold=args.threshold)
    # the state's lock before the senders: a run refused for another's state must not
    # send that run's InfluxDB spool beside it, nor say what it holds
    watcher = Watcher(classifier, directory, state, destinations, args.settle,
                      retry_after=0.0 if args.once else RETRY_AFTER)
    try:
        senders = Senders.from_args(args, classifier.card.alerts, args.log or state,
                                     state=state)
        try:
            destinations.start(classifier.labels)
            destinations.senders += senders.items
            return _watch(args, watcher, destinations, directory, path, state)
        finally:
            senders.close()
    finally:
        watcher.close()


def _watch(args: argparse.Namespace, watcher: Watcher, destinations: Destinations,
           directory: Path, path: Path, state: Path) -> int:
    """Once (cron) or until stopped; the exit status."""
    if args.once:
        watcher.scan()
        if watcher.unsettled:
            print(f"frameqc watch: {watcher.unsettled} frame"
                  f"{'s' if watcher.unsettled > 1 else ''} not settled yet (changed "
                  f"less than --settle {args.settle:g} s ago); left for the next run",
                  file=sys.stderr)
        ok = destinations.close() and not watcher.unwritten
        return EXIT_OK if ok else EXIT_FRAME_FAILED
    print(f"frameqc watch: {directory} with {path}; state in {state}",
          file=sys.stderr, flush=True)
    watcher.run(args.interval)
    return EXIT_OK
