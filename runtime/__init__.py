"""frameqc runtime: classify telescope frames with an exported ONNX model, without torch.

Data flows one way: file -> array -> tensor -> probabilities -> decision -> record ->
encodings. The sub-packages are layers, each importing only from those listed before it
(``tests/test_layout.py`` checks it)::

    errors, util/   one-line errors; the progress line, text and time helpers, cache folder
    data/           reading frames, the one SOURCES grammar, binning, synthetic frames
    model/          the card, the decision rule, recipes (array -> tensor), the session
    engine/         the pipeline: Classifier, Result
    output/         the one record definition, its encodings (the InfluxDB line protocol
                    too), and Destinations: a result becomes its record and goes everywhere
    senders/        decisions sent on in the background: InfluxDB points, alert hooks
    serving/        server, client, protocol, watch; Router (a server if one serves, else here)
    lifecycle/, archive/, demo/, web/
                    labelled sets, evaluation, report, the night page; the Dask archive
                    run; the demo; the labelling app
    commands/       one module per command, registered in COMMANDS
    cli             the entry point

The user-facing documentation is in docs/ (docs/upstream.md: the upstream classifier).

The Python API, for notebooks and pipelines (the commands are thin layers over it)::

    from frameqc.runtime import Classifier, LabelledSet, evaluate

    clf = Classifier.load("touse2.onnx")                # model + card + recipe + rule
    r = clf.classify("h_e_20250708_1_1_1_1.fits")       # a path, bytes or a numpy array
    r.decision.label, r.decision.probabilities
    for r in clf.run(paths): ...                        # many frames, batched, in order
    ev = evaluate(clf, LabelledSet.load("labelled/"))   # accuracy, confusion, per_label
    ev.to_dict()

Names are imported on first use, so ``import frameqc.runtime`` costs nothing.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

_API = {"Classifier": "engine.pipeline", "Result": "engine.pipeline",
        "Model": "model.session", "ModelCard": "model.card", "Decision": "model.decision",
        "decide": "model.decision", "Frame": "data.reader", "read_frame": "data.reader",
        "LabelledSet": "lifecycle.labelled", "Evaluation": "lifecycle.evaluation",
        "evaluate": "lifecycle.evaluation", "write_report": "lifecycle.report",
        "FrameQCError": "errors", "FrameError": "errors", "ModelError": "errors",
        "UsageError": "errors"}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
