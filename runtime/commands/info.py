"""``frameqc info``: print the model card stored inside an exported model."""

from __future__ import annotations

import argparse

from frameqc.runtime.commands.common import EXIT_OK

HELP = "print a model's card"


def add_parser(sub) -> None:
    p = sub.add_parser("info", help=HELP,
                       description="Print the model card stored inside an exported model.",
                       epilog="example:\n  frameqc info models/touse2.onnx --json")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print the card as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from frameqc.runtime.model.session import Model

    card = Model(args.model, threads=1).card
    print(json.dumps(asdict(card), indent=2) if args.json
          else card.describe() + "\n\n" + card.advice())
    return EXIT_OK
