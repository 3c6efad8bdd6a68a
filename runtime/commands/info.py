"""``frameqc info``: print the model card stored inside an exported model, and which
engines can run it on this machine."""

from __future__ import annotations

import argparse

from frameqc.runtime.commands.common import EXIT_OK

HELP = "print a model's card and the engines that can run it here"


def add_parser(sub) -> None:
    p = sub.add_parser("info", help=HELP,
                       description="Print the model card stored inside an exported model, "
                                   "and which engines can run it on this CPU.",
                       epilog="example:\n  frameqc info models/touse2.onnx --json")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print the card as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import os
    from dataclasses import asdict

    from frameqc.runtime.errors import ModelError
    from frameqc.runtime.model.peek import read_card

    if not os.path.isfile(args.model):
        raise ModelError(f"{args.model}: no such model file")
    card = read_card(os.path.realpath(args.model))
    if card is None:  # the session says what is wrong with the file
        from frameqc.runtime.model.session import Model

        card = Model(args.model, threads=1, engine="onnxruntime").card
    _check_weights(args.model)
    print(json.dumps(asdict(card), indent=2) if args.json
          else card.describe() + "\n\n" + card.advice() + "\n\n" + engines_here(card))
    return EXIT_OK


def _check_weights(model: str) -> None:
    """A model whose weights file is missing is said so, though its card could be read
    (no session is built here: a bf16 model's card is printed on any CPU)."""
    from frameqc.runtime.errors import ModelError
    from frameqc.runtime.model.install import weights_file

    data = weights_file(model)
    if data is not None and not data.is_file():
        raise ModelError(f"{model}: its weights file {data.name} is missing (keep the .data "
                         "file exported with it beside it)")


def engines_here(card) -> str:
    """Which engines can run this model on this CPU, and why the others cannot."""
    from frameqc.runtime.model.engines import ENGINES, refusal
    from frameqc.runtime.model.engines.cpuflags import cpu_flags, cpu_name, units

    flags = cpu_flags()
    lines = [f"this CPU: {cpu_name()} ({units(flags)})"]
    for name in ENGINES:
        why = refusal(name, card, flags)
        lines.append(f"  {name}: {'can run it' if why is None else 'no: ' + why}")
    return "\n".join(lines)
