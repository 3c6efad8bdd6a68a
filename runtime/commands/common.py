"""What the commands share: the parser class, exit statuses, and the option groups."""

from __future__ import annotations

import argparse
import re

from frameqc.runtime.commands.options import positive_int, probability

EXIT_OK, EXIT_FRAME_FAILED, EXIT_USAGE = 0, 1, 2


class Parser(argparse.ArgumentParser):
    """argparse with examples kept as written, and usage errors in one line (exit 2).

    A mistyped option gets the closest real ones as a suggestion.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        unknown = re.match(r"unrecognized arguments: (\S+)", message)
        if unknown and unknown.group(1).startswith("--"):
            import difflib

            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            close = difflib.get_close_matches(unknown.group(1).split("=")[0], known, n=2,
                                                cutoff=0.75)
            if close:
                message += f" (did you mean {' or '.join(close)}?)"
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")

    def subparser(self, name: str) -> Parser:
        """The parser of the command ``name`` (this parser when it has none)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return self


def model_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that loads a model."""
    p.add_argument("--model", "-m", help="model .onnx (default: $FRAMEQC_MODEL)")
    threads_arg(p)


def threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int,
                   help="inference threads (default: $FRAMEQC_THREADS, else usable CPUs)")


def result_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that writes decisions."""
    from frameqc.runtime.output.formats import FORMATS

    p.add_argument("--format", "-f", choices=FORMATS, default="text")
    p.add_argument("--threshold", type=probability,
                   help="alert threshold (default: the model card's)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per frame to FILE")
    p.add_argument("--sort-into", metavar="DIR",
                   help="link each frame as DIR/<decided label>/NAME: a labelled set to "
                        "correct by hand, for 'frameqc evaluate' and 'frameqc train'")


def sources_arg(p: argparse.ArgumentParser, what: str = "frames") -> None:
    """SOURCES, in the one grammar of :mod:`frameqc.runtime.data.sources`."""
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help=f"{what}: a frame file, a folder (searched recursively, hidden "
                        "names skipped), - for paths on stdin, or @LIST for paths in a file")
