"""The ``frameqc`` command: small subcommands over the runtime modules.

Heavy modules (numpy, astropy, onnxruntime) are imported inside the commands that need
them, so that ``--help`` and light paths start fast. Commands that need torch
(``export``) plug in through the ``frameqc.commands`` entry point group; the runtime
itself knows nothing of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

from . import __version__
from .errors import FrameQCError, UsageError

EXIT_OK, EXIT_FRAME_FAILED, EXIT_USAGE = 0, 1, 2
PLUGIN_GROUP = "frameqc.commands"


class _Parser(argparse.ArgumentParser):
    """argparse with examples kept as written in the epilog."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


# -- classify ---------------------------------------------------------------------------

def _sources(paths: list[str], stdin) -> Iterator[tuple[str, str]]:
    """Expand PATHs: a directory gives its frames sorted, ``-`` reads paths from stdin."""
    from .frames import list_frames

    for p in paths:
        if p == "-":
            for line in stdin:
                line = line.strip()
                if line:
                    yield line, line
        elif os.path.isdir(p):
            for f in list_frames(Path(p)):
                yield str(f), str(f)
        else:
            yield p, p


def _threshold(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 < t <= 1.0:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return t


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {value!r}")
    return int(value)


def cmd_classify(args: argparse.Namespace) -> int:
    from .model import Model, resolve_model_path
    from .output import Writer, append_log, write_preview
    from .pipeline import Classifier
    from .recipes import make_recipe, parse_binning

    binning = parse_binning(args.bin) if args.bin is not None else None
    model = Model(resolve_model_path(args.model), threads=args.threads)
    card = model.card
    recipe = make_recipe(card.recipe, card.input_size, binning)
    classifier = Classifier(model, recipe, args.threshold)
    writer = Writer(args.format, sys.stdout, sys.stderr, card.labels, card.model_id)
    sources = list(_sources(args.paths, sys.stdin))
    progress = sys.stderr.isatty() and len(sources) > 1
    failed = 0
    for n, result in enumerate(classifier.run(sources), 1):
        if progress:
            sys.stderr.write(f"\r\033[K[{n}/{len(sources)}] ")
        writer.write(result)
        failed += result.error is not None
        if args.log:
            append_log(args.log, result, card.model_id)
        if args.preview and result.prepared is not None:
            write_preview(args.preview, result)
    if progress:
        sys.stderr.write("\r\033[K")
    if not sources:
        raise UsageError("no frames given (a directory with no frames, or empty stdin)")
    return EXIT_FRAME_FAILED if failed else EXIT_OK


def add_classify(sub) -> None:
    p = sub.add_parser(
        "classify", help="classify frames (FITS, or JPEG/PNG for rgb models)",
        description="Classify frames with an exported model; one line per frame.",
        epilog="examples:\n"
               "  frameqc classify --model models/touse2.onnx /data/incoming/h_e_*_1.fits\n"
               "  FRAMEQC_MODEL=model.onnx frameqc classify --format json /data/incoming\n"
               "  ls /data/incoming/*.fits | frameqc classify --model model.onnx -\n\n"
               "exit status: 0 all classified, 1 some frame failed, 2 usage or model error")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="frame file, directory of frames, or - for paths on stdin")
    p.add_argument("--model", "-m", help="model .onnx (default: $FRAMEQC_MODEL)")
    p.add_argument("--format", "-f", choices=("text", "json", "csv"), default="text")
    p.add_argument("--threshold", type=_threshold,
                   help="alert threshold (default: the model card's)")
    p.add_argument("--bin", metavar="auto|none|N",
                   help="median binning of FITS frames (default: the card's, auto)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per frame to FILE")
    p.add_argument("--preview", metavar="DIR",
                   help="save the prepared 224x224 image the network saw as DIR/NAME.png")
    p.add_argument("--threads", type=_positive_int,
                   help="inference threads (default: $FRAMEQC_THREADS, else usable CPUs)")
    p.set_defaults(func=cmd_classify)


# -- info -------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from .model import Model

    card = Model(args.model, threads=1).card
    print(json.dumps(asdict(card), indent=2) if args.json else card.describe())
    return EXIT_OK


def add_info(sub) -> None:
    p = sub.add_parser("info", help="print a model's card",
                       description="Print the model card stored inside an exported model.",
                       epilog="example:\n  frameqc info models/touse2.onnx --json")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_info)


# -- bin --------------------------------------------------------------------------------

def cmd_bin(args: argparse.Namespace) -> int:
    from .errors import FrameError
    from .imbin import bin_file

    failed = 0
    for f in args.files:
        try:
            print(bin_file(f, args.b, args.o, args.overwrite))
        except FrameError as exc:
            print(f"frameqc: {f}: {exc}", file=sys.stderr)
            failed += 1
    return EXIT_FRAME_FAILED if failed else EXIT_OK


def add_bin(sub) -> None:
    p = sub.add_parser("bin", help="write median-binned copies of FITS frames (imbin.py)",
                       description="Median-bin FITS frames in NxN boxes into FILE_binN.fits.",
                       epilog="example:\n  frameqc bin -b 9 h_e_20250708_1_1_1_1.fits\n"
                              "  -> h_e_20250708_1_1_1_1_bin9.fits")
    p.add_argument("-b", type=_positive_int, required=True, metavar="N", help="box size")
    p.add_argument("-o", metavar="DIR", help="output directory (default: beside the input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_bin)


# -- demo -------------------------------------------------------------------------------

def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(directory=Path(args.dir) if args.dir else None, rebuild=args.rebuild)


def add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="classify synthetic IO:O frames with a demo model (no torch, no network)",
        description="Make synthetic IO:O frames (good, shutter failure, mirror wobble) and a "
                    "demo model of the real architecture, then classify them.",
        epilog="example:\n  frameqc demo            # first run builds the model (~1 min)")
    p.add_argument("--dir", help="where the model and frames go (default: ~/.cache/frameqc/demo)")
    p.add_argument("--rebuild", action="store_true", help="build the demo model again")
    p.set_defaults(func=cmd_demo)


# -- entry point ------------------------------------------------------------------------

BUILTIN: dict[str, Callable] = {"classify": add_classify, "info": add_info, "bin": add_bin,
                                "demo": add_demo}


def _plugins() -> dict[str, Callable]:
    """Subcommands other parts of the distribution register (e.g. ``export``)."""
    from importlib.metadata import entry_points

    eps = entry_points()
    group = eps.select(group=PLUGIN_GROUP) if hasattr(eps, "select") \
        else eps.get(PLUGIN_GROUP, [])
    return {ep.name: ep for ep in group}


def build_parser(argv: list[str]) -> _Parser:
    parser = _Parser(
        prog="frameqc",
        description="Classify Liverpool Telescope IO:O frames with an ONNX model, no torch.",
        epilog="examples:\n  frameqc demo\n  frameqc classify --model model.onnx FRAME.fits\n"
               "  frameqc export weights.pt --card models/touse2.toml -o model.onnx --int8\n\n"
               "'frameqc COMMAND --help' shows each command's options.")
    parser.add_argument("--version", action="version", version=f"frameqc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in BUILTIN.values():
        add(sub)
    wanted = argv[0] if argv else None
    if wanted not in BUILTIN:
        for name, ep in _plugins().items():
            try:
                ep.load()(sub)
            except ImportError as exc:
                print(f"frameqc: command {name!r} unavailable ({exc})", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except FrameQCError as exc:
        print(f"frameqc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FRAME_FAILED


if __name__ == "__main__":
    sys.exit(main())
