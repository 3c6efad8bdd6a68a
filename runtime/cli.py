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
from collections.abc import Callable, Iterator
from pathlib import Path

from . import __version__
from .errors import FrameQCError, UsageError
from .options import non_negative_float, positive_float, positive_int, probability

EXIT_OK, EXIT_FRAME_FAILED, EXIT_USAGE = 0, 1, 2
PLUGIN_GROUP = "frameqc.commands"


class _Parser(argparse.ArgumentParser):
    """argparse with examples kept as written, and usage errors in one line (exit 2)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


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


class _Emitter:
    """Writes each frame's record, appends it to --log, counts failures, shows progress."""

    def __init__(self, args: argparse.Namespace, total: int) -> None:
        self.args, self.total = args, total
        self.progress = sys.stderr.isatty() and total > 1
        self.writer = None
        self.model_id = ""
        self.done = self.failed = 0
        self.broken: set[str] = set()

    def start(self, labels, model_id: str) -> None:
        """Open the output for a model's labels; kept if a second source takes over."""
        from .output import Writer, check_appendable, prepare_sort_dir

        if self.writer is None:
            if self.args.log:
                check_appendable(self.args.log, "--log")
            if self.args.sort_into:
                prepare_sort_dir(self.args.sort_into, labels)
            self.writer = Writer(self.args.format, sys.stdout, sys.stderr, labels)
        self.model_id = model_id

    def __call__(self, rec: dict, timings: dict[str, float]) -> None:
        from .output import append_log, sort_into

        self.done += 1
        self.failed += "error" in rec
        if self.progress:
            sys.stderr.write(f"\r\033[K[{self.done}/{self.total}] ")
        self.writer.write(rec)
        if self.args.log:
            self.guard("--log", append_log, self.args.log, rec, timings, model=self.model_id)
        if self.args.sort_into:
            self.guard("--sort-into", sort_into, self.args.sort_into, rec)

    def guard(self, option: str, write: Callable, *args, **kwargs) -> None:
        """A side output that fails mid-run: one line (once per option), exit status 1."""
        try:
            write(*args, **kwargs)
        except OSError as exc:
            self.failed += 1
            if option not in self.broken:
                self.broken.add(option)
                print(f"frameqc: {option}: cannot write ({exc.strerror or exc}); "
                      "classifying goes on", file=sys.stderr)

    def finish(self) -> int:
        if self.progress:
            sys.stderr.write("\r\033[K")
        return EXIT_FRAME_FAILED if self.failed else EXIT_OK


def _model_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that loads a model."""
    p.add_argument("--model", "-m", help="model .onnx (default: $FRAMEQC_MODEL)")
    p.add_argument("--threads", type=positive_int,
                   help="inference threads (default: $FRAMEQC_THREADS, else usable CPUs)")


def _result_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that writes decisions."""
    p.add_argument("--format", "-f", choices=("text", "json", "csv"), default="text")
    p.add_argument("--threshold", type=probability,
                   help="alert threshold (default: the model card's)")
    p.add_argument("--log", metavar="FILE", help="append one JSON line per frame to FILE")
    p.add_argument("--sort-into", metavar="DIR",
                   help="link each frame as DIR/<decided label>/NAME: a labelled set to "
                        "correct by hand, for 'frameqc evaluate' and 'frameqc train'")


def cmd_classify(args: argparse.Namespace) -> int:
    """Classify through a running server when one serves this model, else locally."""
    from .card import parse_binning
    from .client import ServerGone, connect
    from .model import MODEL_ENV

    if args.bin is not None:
        parse_binning(args.bin)
    if args.preview and args.socket:
        raise UsageError("--preview saves what this process prepared; drop --socket")
    if args.preview:
        from .output import prepare_dir

        prepare_dir(args.preview, "--preview")
    sources = list(_sources(args.paths, sys.stdin))
    if not sources:
        raise UsageError("no frames given (a directory with no frames, or empty stdin)")
    emit = _Emitter(args, len(sources))
    conn = None if args.preview else connect(args.socket,
                                             args.model or os.environ.get(MODEL_ENV))
    if conn is not None:
        emit.start(conn.status["card"]["labels"], conn.status["model_id"])
        try:
            replies = conn.classify([os.path.abspath(p) for _, p in sources], args.bin,
                                    args.threshold)
            for (name, _), reply in zip(sources, replies, strict=False):
                emit(dict(reply["record"], path=name), reply["timings"])
        except ServerGone as exc:
            if args.socket:
                raise UsageError(f"the server stopped answering ({exc})") from None
        finally:
            conn.close()
    if emit.done < len(sources):
        _classify_here(args, sources[emit.done:], emit)
    return emit.finish()


def _load_model(path: Path, threads: int | None, frames: int | None = None):
    """Build the session in a thread while this one imports what classifying needs.

    onnxruntime releases the GIL while it builds a session, so the imports of the
    pipeline overlap it. Plain FITS frames (IO:O's) are read without astropy, whose
    0.16 s import stays off a cold one-shot. Every import happens in this thread, before
    and after the worker starts: numpy imported from two threads at once can fail
    half-initialised.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy  # noqa: F401
    import onnxruntime  # noqa: F401

    from .model import Model

    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(Model, path, threads, frames)
        from . import pipeline  # noqa: F401
        return loading.result()


def _classify_here(args: argparse.Namespace, sources: list[tuple[str, str]],
                   emit: _Emitter) -> None:
    """Load the model in this process and classify ``sources``."""
    from .card import parse_binning
    from .model import resolve_model_path
    from .output import record, write_preview
    from .pipeline import Classifier

    model = _load_model(resolve_model_path(args.model), args.threads, len(sources))
    card = model.card
    binning = parse_binning(args.bin) if args.bin is not None else None
    classifier = Classifier(model, binning, args.threshold)
    emit.start(card.labels, card.model_id)
    for result in classifier.run(sources):
        if args.preview and result.prepared is not None:
            emit.guard("--preview", write_preview, args.preview, result)
        emit(record(result, card.model_id), result.timings)


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
    _model_args(p)
    _result_args(p)
    p.add_argument("--bin", metavar="auto|none|N",
                   help="median binning of FITS frames (default: the card's, auto)")
    p.add_argument("--preview", metavar="DIR",
                   help="save the prepared 224x224 image the network saw as DIR/NAME.png")
    p.add_argument("--socket", metavar="PATH",
                   help="insist on the server at PATH (default: use the server on "
                        "$FRAMEQC_SOCKET or the default socket if it answers, else run here)")
    p.set_defaults(func=cmd_classify)


# -- info -------------------------------------------------------------------------------

def cmd_info(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from .model import Model

    card = Model(args.model, threads=1, frames=0).card
    print(json.dumps(asdict(card), indent=2) if args.json
          else card.describe() + "\n\n" + card.advice())
    return EXIT_OK


def add_info(sub) -> None:
    p = sub.add_parser("info", help="print a model's card",
                       description="Print the model card stored inside an exported model.",
                       epilog="example:\n  frameqc info models/touse2.onnx --json")
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=cmd_info)


# -- evaluate ---------------------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    """Every model on the same labelled frames; figures, then an optional report."""
    import json

    from .evaluation import evaluate, format_text
    from .labelled import LabelledSet
    from .model import resolve_model_path
    from .pipeline import Classifier

    paths = [resolve_model_path(m) for m in (args.model or [None])]
    data = LabelledSet.load(args.data)
    if args.report:  # fail on an unusable report before minutes of inference
        from .report import pyplot

        pyplot()
    evaluations = []
    tty = sys.stderr.isatty()
    for k, path in enumerate(paths, 1):
        classifier = Classifier(_load_model(path, args.threads, len(data)))
        label = f"{path} ({k}/{len(paths)})"

        def progress(done: int, total: int, label: str = label) -> None:
            if tty:
                sys.stderr.write(f"\r\033[K{label}: {done}/{total} frames")
                sys.stderr.flush()

        evaluations.append(evaluate(classifier, data, args.mistakes if args.report else 0,
                                    name=str(path), progress=progress))
        if tty:
            sys.stderr.write("\r\033[K")
    if args.format == "json":
        for ev in evaluations:
            print(json.dumps(ev.to_dict()))
    else:
        sys.stdout.write(format_text(evaluations))
    if args.report:
        from .report import write_report

        index = write_report(evaluations, args.report, str(args.data))
        print(f"report: {index}", file=sys.stderr)
    return EXIT_FRAME_FAILED if any(ev.failed for ev in evaluations) else EXIT_OK


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="how good are models on labelled frames (accuracy, confusion, ...)",
        description="Classify labelled frames (DATA/<label>/*.fits, or a CSV of path,label) "
                    "with one or more models and compare with the labels: accuracy, "
                    "per-label precision/recall/F1, the confusion matrix, and the alert "
                    "label's precision and recall as the threshold moves. The decisions "
                    "are exactly those 'frameqc classify' makes.",
        epilog="examples:\n"
               "  frameqc evaluate --model touse2.onnx labelled/\n"
               "  frameqc evaluate -m old.onnx -m new.onnx -m new.int8.onnx labelled/ "
               "--report report/\n"
               "  frameqc evaluate -m model.onnx frames.csv --format json\n\n"
               "exit status: 0 every frame classified, 1 some frame could not be read, "
               "2 usage or model error")
    p.add_argument("data", metavar="DATA", help="labelled folder or CSV of path,label")
    p.add_argument("--model", "-m", action="append",
                   help="model .onnx (repeat to compare; default: $FRAMEQC_MODEL)")
    p.add_argument("--threads", type=positive_int,
                   help="inference threads (default: $FRAMEQC_THREADS, else usable CPUs)")
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="text tables, or one JSON object per model per line")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html: plots and the mistakes as the network "
                        "saw them (needs frameqc[report])")
    p.add_argument("--mistakes", type=positive_int, default=60, metavar="N",
                   help="mistakes shown per model in the report (default 60)")
    p.set_defaults(func=cmd_evaluate)


# -- archive ----------------------------------------------------------------------------

def cmd_archive(args: argparse.Namespace) -> int:
    from .archive import archive
    from .model import resolve_model_path

    summary = archive(resolve_model_path(args.model), args.output, args.sources,
                      scheduler=args.scheduler, workers=args.workers, resume=args.resume,
                      batch=args.batch)
    print(f"frameqc archive: {summary.line()}; results in {args.output}", file=sys.stderr)
    return EXIT_OK


def add_archive(sub) -> None:
    from .archive import BATCH

    p = sub.add_parser(
        "archive", help="reclassify an archive on a Dask cluster, Parquet out (resumable)",
        description="Classify every frame of SOURCES (files, folders searched recursively, "
                    "@LIST files of paths) on a Dask cluster: a LocalCluster here, or an "
                    "existing scheduler. One Parquet row per frame in OUT: path, night, "
                    "label, index, probability, p_<label>..., model, error, seconds. "
                    "Needs the dask extra: pip install 'frameqc[dask]'.",
        epilog="examples:\n"
               "  frameqc archive --model touse3.onnx -o results/ /archive/ioo/2024/\n"
               "  frameqc archive --model touse3.onnx -o results/ --resume @frames.txt\n"
               "  frameqc archive --model /shared/touse3.onnx -o /shared/results "
               "--scheduler tcp://head:8786 @frames.txt")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="frame file, folder (recursive), or @FILE listing paths")
    p.add_argument("--model", "-m", help="model .onnx (default: $FRAMEQC_MODEL); the "
                   "workers must see it at the same path")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="folder of the Parquet dataset")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="an existing Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help="worker processes of the local cluster (default: usable CPUs)")
    p.add_argument("--resume", action="store_true",
                   help="skip frames already in OUT for the same model")
    p.add_argument("--batch", type=positive_int, default=BATCH, metavar="N",
                   help=f"frames per task (default {BATCH})")
    p.set_defaults(func=cmd_archive)


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
    p.add_argument("-b", type=positive_int, required=True, metavar="N", help="box size")
    p.add_argument("-o", metavar="DIR", help="output directory (default: beside the input)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_bin)


# -- serve and status -------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    from .model import Model, resolve_model_path
    from .protocol import default_socket
    from .server import check_options, serve

    for d in args.allow or ():
        if not os.path.isdir(d):
            raise UsageError(f"--allow {d}: not a directory")
    check_options(args.tcp, args.log)
    model = Model(resolve_model_path(args.model), threads=args.threads)
    return serve(model, Path(args.socket) if args.socket else default_socket(), args.tcp,
                 args.log, args.max_bytes, args.timeout, allow=tuple(args.allow or ()))


def add_serve(sub) -> None:
    from .protocol import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT

    p = sub.add_parser(
        "serve", help="keep the model loaded and answer on a local socket (and TCP)",
        description="Load the model once and classify for clients: 'frameqc classify' uses "
                    "the local socket by itself; --tcp also speaks the upstream wobble "
                    "protocol (8-byte big-endian length, image bytes -> 'label p').",
        epilog="examples:\n  frameqc serve --model /models/touse2.onnx &\n"
               "  frameqc classify --model /models/touse2.onnx FRAME.fits   # answered by it\n"
               "  frameqc serve --model wobble.onnx --tcp 127.0.0.1:8225 --log serve.log\n\n"
               "default socket: $FRAMEQC_SOCKET, else $XDG_RUNTIME_DIR/frameqc.sock, "
               "else /tmp/frameqc-UID/frameqc.sock")
    _model_args(p)
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
    p.set_defaults(func=cmd_serve)


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from .client import connect
    from .protocol import default_socket

    conn = connect(str(args.socket or default_socket()), None)
    status = conn.status
    conn.close()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        card = status["card"]
        print(f"frameqc {status['version']} pid {status['pid']} up {status['uptime']:.0f} s: "
              f"{status['model']['path']} ({', '.join(card['labels'])}, {card['precision']}); "
              f"{status['requests']} requests, {status['frames']} frames, "
              f"{status['errors']} errors; {', '.join(status['endpoints'])}")
    return EXIT_OK


def add_status(sub) -> None:
    p = sub.add_parser("status", help="ask a running server how it is",
                       description="Print a running server's model, uptime and counters; "
                                   "exit 2 when no server answers (a health check).",
                       epilog="example:\n  frameqc status --json")
    p.add_argument("--socket", metavar="PATH", help="server socket (default: as serve)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)


# -- watch ------------------------------------------------------------------------------

def cmd_watch(args: argparse.Namespace) -> int:
    from .demo import cache_dir
    from .model import resolve_model_path
    from .pipeline import Classifier
    from .watch import RETRY_AFTER, Watcher, default_state

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    model = _load_model(resolve_model_path(args.model), args.threads)
    card = model.card
    classifier = Classifier(model, threshold=args.threshold)
    emit = _Emitter(args, 0)
    emit.start(card.labels, card.model_id)
    state = Path(args.state) if args.state else default_state(directory, cache_dir())
    watcher = Watcher(classifier, directory, state, emit, args.settle,
                      retry_after=0.0 if args.once else RETRY_AFTER)
    if args.once:
        watcher.scan()
    else:
        print(f"frameqc watch: {directory} with {model.path}; state in {state}",
              file=sys.stderr, flush=True)
        watcher.run(args.interval)
    return emit.finish() if args.once else EXIT_OK


def add_watch(sub) -> None:
    p = sub.add_parser(
        "watch", help="classify each new frame in a folder once, when it is complete",
        description="Watch an incoming folder: each frame is classified once, after it has "
                    "stopped changing, and what was done is remembered across restarts "
                    "(in a state file outside the folder). Stops on SIGTERM/SIGINT.",
        epilog="examples:\n  frameqc watch --model /models/touse2.onnx /data/incoming "
               "--log classifier.log\n"
               "  frameqc watch --model m.onnx --once /data/incoming   # catch up, then exit")
    p.add_argument("dir", metavar="DIR")
    _model_args(p)
    _result_args(p)
    p.add_argument("--state", metavar="FILE",
                   help="what was done (default: under ~/.cache/frameqc/watch)")
    p.add_argument("--interval", type=positive_float, default=2.0, metavar="S",
                   help="seconds between scans (default 2)")
    p.add_argument("--settle", type=non_negative_float, default=2.0, metavar="S",
                   help="a frame unchanged this long is complete (default 2)")
    p.add_argument("--once", action="store_true",
                   help="scan once and exit (exit 1 if a frame failed; a failed frame is "
                        "tried again by the next run, 3 times at most)")
    p.set_defaults(func=cmd_watch)


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

BUILTIN: dict[str, Callable] = {"classify": add_classify, "evaluate": add_evaluate,
                                "archive": add_archive, "info": add_info, "bin": add_bin,
                                "serve": add_serve, "status": add_status, "watch": add_watch,
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
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
