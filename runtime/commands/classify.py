"""``frameqc classify``: decide frames, through a running server when one serves the model."""

from __future__ import annotations

import argparse

from frameqc.runtime.commands.common import (
    EXIT_FRAME_FAILED,
    EXIT_OK,
    model_args,
    result_args,
    sender_args,
    sources_arg,
)

HELP = "classify frames (FITS, or JPEG/PNG for rgb models)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classify", help=HELP,
        description="Classify frames with an exported model; one line per frame.",
        epilog="examples:\n"
               "  frameqc classify --model models/touse2.onnx /data/incoming/h_e_*_1.fits\n"
               "  FRAMEQC_MODEL=model.onnx frameqc classify --format json /data/incoming\n"
               "  ls /data/incoming/*.fits | frameqc classify --model model.onnx -\n\n"
               "exit status: 0 all classified, 1 some frame failed, 2 usage or model error")
    sources_arg(p)
    model_args(p)
    result_args(p)
    p.add_argument("--bin", metavar="auto|none|N",
                   help="median binning of FITS frames (default: the card's, auto)")
    p.add_argument("--preview", metavar="DIR",
                   help="save the prepared image the network saw as DIR/NAME.png")
    p.add_argument("--socket", metavar="PATH",
                   help="insist on the server at PATH (default: use the server on "
                        "$FRAMEQC_SOCKET or the default socket if it answers, else run here)")
    sender_args(p)


def run(args: argparse.Namespace) -> int:
    from frameqc.runtime.data.sources import expand
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.senders import Senders, tags
    from frameqc.runtime.serving.route import Router

    router = Router(args.model, args.socket, args.bin, args.threshold, args.threads,
                    local=bool(args.preview))
    destinations = Destinations(args.format, args.log, args.sort_into, args.preview,
                                tags=tags(args))
    destinations.check()
    paths = list(expand(args.sources))
    if not paths:
        raise UsageError(f"no frames given: none in {', '.join(args.sources)} (a folder "
                         "with no frames, or an empty list)")
    Senders.check(args)  # before the model is touched
    router.open(len(paths))
    try:
        senders = Senders.from_args(args, router.alerts, args.log)
    except BaseException:
        router.close()
        raise
    destinations.senders += senders.items
    destinations.progress_to(len(paths))
    try:
        for n, decided in enumerate(router.run(paths)):
            if n == 0:  # not before: a model that cannot load prints no header, makes no folder
                destinations.start(router.labels)
            destinations.send(decided, router.card)
    finally:
        router.close()
        senders.close()
    return EXIT_OK if destinations.close() else EXIT_FRAME_FAILED
