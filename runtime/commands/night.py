"""``frameqc night``: the night at a glance, a page and a picture from the decision logs."""

from __future__ import annotations

import argparse
import sys

from frameqc.runtime.commands.common import EXIT_OK
from frameqc.runtime.commands.options import positive_float

HELP = "the night at a glance: a page and a picture of its frames, from the logs"


def _night(value: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {value!r}") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "night", help=HELP,
        description="Read the decisions frameqc already wrote (the JSON-lines --log of "
                    "serve, watch and classify; the Parquet datasets of archive) and write "
                    "DIR/index.html and DIR/night.png: the night's frames per label, alert "
                    "rate, failures and models; the alert probability over the night; the "
                    "alert and doubtful frames with the image the network saw; and, with "
                    "several nights in the sources, the alert rate per night. Nothing is "
                    "classified again; images are made once and kept in DIR/seen.",
        epilog="examples:\n"
               "  frameqc night /var/log/frameqc/watch.log -o /var/www/ops/frameqc\n"
               "  frameqc night watch.log archive-out/ -o night/ --night 2025-07-08\n"
               "  frameqc night -m /models/touse2.onnx watch.log -o /var/www/ops/frameqc "
               "--last 14h --refresh 300\n\n"
               "a night is the UTC date of DATE-OBS - 12 h (the night of 8 July holds its "
               "frames up to the next noon)")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a JSON-lines log, a .parquet file, or a folder of them (archive)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="where index.html, night.png and the images go (made if needed)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--night", type=_night, metavar="YYYY-MM-DD",
                      help="the night to show (default: the latest night in the sources)")
    when.add_argument("--last", metavar="SPAN",
                      help="the frames of the last SPAN instead (12h, 90m, 2d)")
    p.add_argument("--refresh", type=positive_float, metavar="S",
                   help="the page reloads itself every S seconds (a screen left open)")
    p.add_argument("--model", "-m",
                   help="the model that decided (default: $FRAMEQC_MODEL if set): its card "
                        "gives the alert labels, the threshold drawn and the recipe of the "
                        "images; without one, every label but OK is an alert and images use "
                        "the default recipe of the frame's kind")


def run(args: argparse.Namespace) -> int:
    import os

    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.lifecycle.night import build, headline, parse_span
    from frameqc.runtime.lifecycle.page import shown
    from frameqc.runtime.model import resolve_model_path
    from frameqc.runtime.model.peek import read_card

    last = parse_span(args.last) if args.last else None
    card = None
    model = resolve_model_path(args.model, required=False)
    if model:
        card = read_card(model)
        if card is None:
            raise UsageError(f"{model}: not a frameqc model (no card in it)")
    s = build(args.sources, args.output, card, args.night, last, args.refresh)
    for source, skipped in s.skipped_in.items():  # problems: stderr (cron's night.err)
        if skipped:
            print(f"frameqc night: {shown(source)}: {skipped}", file=sys.stderr)
    page = shown(os.path.join(args.output, "index.html"))
    print(f"frameqc night: {s.name}: {headline(s)} -> {page}")  # what was done: stdout
    return EXIT_OK
