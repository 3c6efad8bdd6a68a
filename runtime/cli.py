"""The ``frameqc`` command: a parser built from the command registry, and the entry point.

Each command is a module of :mod:`frameqc.runtime.commands`; this module only assembles
them, turns frameqc's errors into one line and an exit status, and leaves quickly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from frameqc.runtime import __version__
from frameqc.runtime.commands import COMMANDS, PLUGIN_GROUP, load
from frameqc.runtime.commands.common import EXIT_FRAME_FAILED, EXIT_USAGE, Parser
from frameqc.runtime.errors import FrameQCError
from frameqc.runtime.model import ENGINE_ENV


def _plugins() -> dict[str, Callable]:
    """Subcommands other parts of the distribution register (e.g. ``export``)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def build_parser(argv: list[str]) -> Parser:
    """The parser; only the named command's module is imported when one is named."""
    parser = Parser(
        prog="frameqc",
        description="Classify Liverpool Telescope IO:O frames with an ONNX model, no torch.",
        epilog="examples:\n  frameqc demo\n  frameqc classify --model model.onnx FRAME.fits\n"
               "  frameqc export weights.pt --card models/touse2.toml -o model.onnx --int8\n\n"
               "'frameqc COMMAND --help' shows each command's options.")
    parser.add_argument("--version", action="version", version=f"frameqc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=Parser)
    wanted = argv[0] if argv else None
    for name in (wanted,) if wanted in COMMANDS else COMMANDS:
        module = load(name)
        module.add_parser(sub)
        sub.choices[name].set_defaults(func=module.run)
    if wanted not in COMMANDS:
        for name, ep in _plugins().items():
            try:
                ep.load()(sub)
            except ImportError as exc:
                print(f"frameqc: command {name!r} unavailable ({exc})", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser: its options, its --help
        parser.subparser(args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    pinned = getattr(args, "engine", None)
    before = os.environ.get(ENGINE_ENV)
    if pinned:  # read where the model is loaded, in this process and in its workers
        os.environ[ENGINE_ENV] = pinned
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
    finally:
        if pinned and before is None:
            os.environ.pop(ENGINE_ENV, None)
        elif pinned:
            os.environ[ENGINE_ENV] = before


def entry() -> None:
    """The console script: run, flush, and leave without tearing the interpreter down.

    Freeing a loaded session and hundreds of modules at exit takes about 0.15 s, a fifth
    of a cold one-shot, and gives nothing back to a process that is ending. Every file
    frameqc writes is closed by then; only stdout and stderr need flushing.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or EXIT_FRAME_FAILED
    os._exit(code)


if __name__ == "__main__":
    entry()
