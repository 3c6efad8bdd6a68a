"""What the commands share: the parser class, exit statuses, and the option groups."""

from __future__ import annotations

import argparse
import re

from frameqc.runtime.commands.options import positive_float, positive_int, probability

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
    """--threads and --engine: how the network runs (either engine takes the threads)."""
    p.add_argument("--threads", type=positive_int,
                   help="inference threads (default: $FRAMEQC_THREADS, else usable CPUs, "
                        "a container's CPU quota included)")
    p.add_argument("--engine", choices=("auto", "onnxruntime", "openvino"),
                   help="the engine that runs the model (default: $FRAMEQC_ENGINE, else auto: "
                        "the fastest here of those the model's card validated, measured once "
                        "per model and CPU; docs/performance.md)")


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


def sender_args(p: argparse.ArgumentParser, resident: bool = False,
              spool: str = "~/.cache/frameqc/frameqc.influx-spool") -> None:
    """Decisions to InfluxDB and alert hooks (docs/grafana.md, docs/alerts.md).

    ``spool`` names where points wait without ``--log`` (``senders.spool_beside`` of what
    the command passes it).
    """
    g = p.add_argument_group("decisions to InfluxDB, and alert hooks")
    g.add_argument("--influx", metavar="URL",
                   help="send each decision as a point: http://HOST:8086/write?db=DB "
                        "(InfluxDB 1.x), or .../api/v2/write?org=O&bucket=B with "
                        "$FRAMEQC_INFLUX_TOKEN; never delays classifying (points wait until "
                        f"InfluxDB has them in L.influx-spool with --log L, else {spool})")
    formats = any(a.dest == "format" for a in p._actions)
    g.add_argument("--influx-tag", action="append", metavar="KEY=VALUE",
                   help="a tag on every point, e.g. instrument=IOO (repeatable"
                        + ("; --format influx too)" if formats else ")"))
    g.add_argument("--on-alert", metavar="CMD",
                   help="run CMD (split as a shell would, no shell) when a decision is one of "
                        "the card's alert labels: the record as JSON on stdin and as "
                        "FRAMEQC_* variables")
    g.add_argument("--alert-timeout", type=positive_float, default=30.0, metavar="S",
                   help="seconds a hook may run before it is killed (default 30)")
    if resident:
        g.add_argument("--alert-after", type=positive_int, metavar="N",
                       help="run the hook once N consecutive frames are alerts, and again "
                            "only after a good frame ended the streak (default: every alert; "
                            "the streak is kept across runs: beside watch's state, beside "
                            "serve's --log)")
    else:  # said as what it is, not as a stray frame name
        g.add_argument("--alert-after", action=_ResidentOnly, help=argparse.SUPPRESS)


class _ResidentOnly(argparse.Action):
    """``--alert-after`` given to a command without streaks: one line saying where it is."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} belongs to 'frameqc watch' and 'frameqc serve' (a "
                     f"streak across frames); {parser.prog} runs the hook on every alert")
