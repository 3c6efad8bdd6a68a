"""``frameqc evaluate``: how good models are on labelled frames, and an optional report."""

from __future__ import annotations

import argparse
import sys

from frameqc.runtime.commands.common import EXIT_FRAME_FAILED, EXIT_OK, threads_arg
from frameqc.runtime.commands.options import positive_int

HELP = "how good are models on labelled frames (accuracy, confusion, ...)"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help=HELP,
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
    threads_arg(p)
    p.add_argument("--format", "-f", choices=("text", "json"), default="text",
                   help="text tables, or one JSON object per model per line")
    p.add_argument("--report", metavar="DIR",
                   help="also write DIR/index.html: plots and the mistakes as the network "
                        "saw them (needs frameqc[report])")
    p.add_argument("--mistakes", type=positive_int, default=60, metavar="N",
                   help="mistakes shown per model, and disagreements per pair of models, "
                        "in the report (default 60)")


def run(args: argparse.Namespace) -> int:
    """Every model on the same labelled frames; figures, then an optional report."""
    import json
    from pathlib import Path

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.lifecycle.evaluation import evaluate, format_text
    from frameqc.runtime.lifecycle.labelled import LabelledSet
    from frameqc.runtime.model import resolve_model_path
    from frameqc.runtime.util.progress import Progress

    paths = [Path(resolve_model_path(m)) for m in (args.model or [None])]
    data = LabelledSet.load(args.data)
    if args.report:  # fail on an unusable report before minutes of inference
        from frameqc.runtime.lifecycle.report import pyplot

        pyplot()
    evaluations = []
    for k, path in enumerate(paths, 1):
        classifier = Classifier.load(path, args.threads)
        progress = Progress(f"frames, {path} ({k}/{len(paths)})", len(data))
        evaluations.append(evaluate(classifier, data, args.mistakes if args.report else 0,
                                    name=str(path),
                                    progress=lambda done, _total, p=progress: p.update(done)))
        progress.close()
    if args.format == "json":
        for ev in evaluations:
            print(json.dumps(ev.to_dict()))
    else:
        sys.stdout.write(format_text(evaluations))
    if args.report:
        from frameqc.runtime.lifecycle.report import write_report

        index = write_report(evaluations, args.report, str(args.data), args.mistakes)
        print(f"report: {index}", file=sys.stderr)
    return EXIT_FRAME_FAILED if any(ev.failed for ev in evaluations) else EXIT_OK
