"""``frameqc label``: label frames in a browser, one key per frame, with the model's help."""

from __future__ import annotations

import argparse
import sys

from frameqc.runtime.commands.common import EXIT_OK, model_args, sources_arg
from frameqc.runtime.commands.options import positive_int
from frameqc.runtime.web.labelling import ORDERS

HELP = "label frames in a browser, pre-sorted by the model (writes labels.csv)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "label", help=HELP,
        description="Classify the frames in the background and serve a local page to label "
                    "them: the network's view, a stretched view of the whole frame, the "
                    "model's decision and the header facts; one key per label, a grid to "
                    "correct the model's sorting by the page. Each label is on disk "
                    "(labels.csv, path,label, and a journal beside it) before the page "
                    "shows it saved; restarting on the same -o resumes. labels.csv is what "
                    "'frameqc evaluate' and 'frameqc train' read. Needs frameqc[label].",
        epilog="examples:\n"
               "  frameqc label --model touse2.onnx /data/2025-07-08/ -o labels.csv\n"
               "  frameqc label -m touse2.onnx @frames.txt -o eval.csv --order random\n"
               "  # from a laptop: ssh -L 8226:127.0.0.1:8226 telescope-host, then open "
               "the printed URL\n\n"
               "orders: uncertain (closest to the decision first: where labels teach most), "
               "alerts (what the model calls an alert first), time (DATE-OBS), random (an "
               "evaluation set must be a random sample, or its accuracy is biased)")
    model_args(p)
    sources_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="labels.csv",
                   help="the labelled set to write (and resume from)")
    p.add_argument("--order", choices=ORDERS, default="uncertain",
                   help="the order frames are shown in (default uncertain; changeable "
                        "on the page)")
    p.add_argument("--user", metavar="NAME", help="who labels (default: $USER)")
    p.add_argument("--port", type=int, default=8226, metavar="P",
                   help="port to listen on (default 8226; 0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; anything else is "
                        "reachable by others: prefer ssh -L)")
    p.add_argument("--batch-size", type=positive_int, default=8, metavar="N",
                   help="frames per inference batch (default 8)")


def run(args: argparse.Namespace) -> int:
    import getpass
    import os
    import secrets
    import threading
    from pathlib import Path

    from frameqc.runtime.data.sources import expand
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.model import resolve_model_path
    from frameqc.runtime.util.progress import Progress

    try:
        from frameqc.runtime.web.label_app import bind, make_app, run_server
    except ImportError as exc:
        raise UsageError(f"'frameqc label' needs the web extra: pip install 'frameqc[label]' "
                         f"({exc.name} is missing)") from None
    from frameqc.runtime.web.labelling import LabellingSession

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, not {args.port}")
    paths = list(dict.fromkeys(expand(args.sources)))
    if not paths:
        raise UsageError("no frames in the sources given")
    classifier = _in_background(Classifier.load, resolve_model_path(args.model), args.threads)
    card = classifier.card
    session = LabellingSession(paths, Path(args.output), card.labels, card.alerts,
                               classifier.threshold, card.model_id, card.precision,
                               args.user or os.environ.get("USER") or getpass.getuser())
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"frameqc: warning: listening on {args.host}: anyone who can reach it and has "
              "the URL can label; prefer the default and ssh -L", file=sys.stderr)
    sock = bind(args.host, args.port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    app = make_app(session, token, args.order, cookie=f"frameqc_label_{port}")
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    host = f"[{shown}]" if ":" in shown else shown
    print(f"http://{host}:{port}/?token={token}", flush=True)
    progress = Progress("frames classified", len(paths))
    worker = threading.Thread(target=_classify, args=(session, classifier, progress,
                                                      args.batch_size), daemon=True)
    worker.start()
    run_server(app, sock)  # until SIGINT or SIGTERM
    progress.close()
    print(session.summary(), file=sys.stderr, flush=True)
    return EXIT_OK


def _lower_priority() -> None:
    """Nice this thread (Linux: per thread), so the page's requests come first on the CPU.

    Threads it starts inherit it: onnxruntime's inference threads are started where the
    session is built, hence :func:`_in_background`.
    """
    import contextlib
    import os
    import threading

    with contextlib.suppress(AttributeError, OSError):  # not Linux: the same priority
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _in_background(func, *args):
    """``func(*args)`` in a thread of lower priority, waited for (its errors raised here)."""
    import threading

    box: dict = {}

    def call() -> None:
        _lower_priority()
        try:
            box["value"] = func(*args)
        except BaseException as exc:  # raised again in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _classify(session, classifier, progress, batch_size: int) -> None:
    """The background pass; a failure is reported, and the labels given so far stay."""
    _lower_priority()
    try:
        session.classify(classifier, progress.update, batch_size)
        counts = session.state("uncertain")["counts"]
        progress.say(f"{counts['classified']} frames classified, {counts['errors']} "
                     "unreadable")
    except Exception as exc:  # the server keeps serving what is done
        from frameqc.runtime.util.text import first_line

        progress.say(f"frameqc: classification stopped: {first_line(exc)}")
