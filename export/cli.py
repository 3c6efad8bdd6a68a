"""``frameqc export``: registered into the runtime CLI through an entry point.

Importing this module needs no torch; the command checks for it and says how to get it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from frameqc.runtime.card import ModelCard
from frameqc.runtime.errors import UsageError

DESCRIPTION = """\
Export a vgg16 transfer-learning state_dict (torch.save) to ONNX, with the model card
(labels, alerts, threshold, preparation recipe, provenance) inside the model file.
The export is validated against torch before it is kept; --int8 also writes
OUT.int8.onnx, calibrated on frames prepared by the runtime's recipe."""

EPILOG = """\
examples:
  frameqc export vgg16-transfer-touse2.pt --card models/touse2.toml -o touse2.onnx --int8
  frameqc export weights.pt --labels Wobble,OK --alert Wobble --threshold 0.6 \\
      --recipe rgb -o wobble.onnx"""


def command(sub) -> None:
    """Add the ``export`` subcommand to the ``frameqc`` parser."""
    p = sub.add_parser("export", help="export a vgg16 state_dict to a validated ONNX model "
                       "(needs the export extra)", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", metavar="WEIGHTS.pt")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    p.add_argument("--card", metavar="CARD.toml",
                   help="labels, alerts, threshold and recipe from a card file (models/)")
    p.add_argument("--labels", help="class names in output index order, comma-separated")
    p.add_argument("--alert", action="append", metavar="LABEL",
                   help="a label given only at or above the threshold (repeatable)")
    p.add_argument("--threshold", type=float, help="alert threshold (default 0.5)")
    p.add_argument("--recipe", choices=("asinh", "rgb"),
                   help="preparation: asinh (FITS, default) or rgb (JPEG/PNG)")
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx")
    p.add_argument("--calibration", metavar="DIR",
                   help="frames to validate and calibrate on (default: synthetic frames)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="largest |dp| allowed between ONNX and torch (default 1e-4)")
    p.set_defaults(func=run)


def resolve_card(args: argparse.Namespace) -> ModelCard:
    """The card file, if any, with the flags given on the command line on top."""
    base = ModelCard.from_toml(args.card) if args.card else None
    labels = args.labels.split(",") if args.labels else (base.labels if base else None)
    if not labels:
        raise UsageError("give the class names: --labels L0,L1 or --card CARD.toml")
    changes = {"labels": tuple(s.strip() for s in labels)}
    if args.alert is not None:
        changes["alerts"] = tuple(args.alert)
    if args.threshold is not None:
        changes["threshold"] = args.threshold
    if args.recipe is not None:
        changes["recipe"] = {"name": args.recipe}
    if base is None:
        return ModelCard(**changes)
    if "alerts" not in changes:
        changes["alerts"] = tuple(a for a in base.alerts if a in changes["labels"])
    return base.with_(**changes)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError("export needs torch: pip install 'frameqc[export]'") from None
    from frameqc.runtime.recipes import make_recipe

    from .frames import directory_tensors, synthetic_tensors
    from .network import Probabilities, build_vgg16
    from .onnx_export import export_fp32, provenance, quantize_int8
    from .weights import load_weights

    card = resolve_card(args)
    recipe = make_recipe(card.recipe, card.input_size)
    out = Path(args.output)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such directory for the output")
    t0 = time.perf_counter()
    weights = load_weights(args.weights)
    if weights.n_classes != len(card.labels):
        raise UsageError(f"the weights have {weights.n_classes} outputs but "
                         f"{len(card.labels)} labels were given ({', '.join(card.labels)})")
    card = card.with_(recipe=recipe.params(), weights_sha256=weights.sha256,
                      weights_name=weights.name, precision="fp32", **provenance())
    net = build_vgg16(weights.n_classes, weights.hidden)
    net.load_state_dict(weights.state_dict, strict=True)
    module = Probabilities(net).eval()

    if args.calibration:
        frames = directory_tensors(recipe, args.calibration)
    else:
        if args.int8:
            print("frameqc export: warning: no --calibration frames; calibrating int8 on "
                  "synthetic frames", file=sys.stderr)
        frames = synthetic_tensors(recipe, 36 if args.int8 else 12)
    n_cal = max(1, (len(frames) * 2) // 3) if len(frames) > 1 else 1
    calibration, held_out = frames[:n_cal], frames[n_cal:] or frames

    checks = export_fp32(module, card, out, frames, atol=args.atol)
    print(f"wrote {out} + .data ({_mib(out):.1f} MiB, fp32, {time.perf_counter() - t0:.1f} s)")
    for c in checks:
        print("  " + c.line())
    if args.int8:
        t1 = time.perf_counter()
        path, check = quantize_int8(out, card, calibration, held_out)
        print(f"wrote {path} + .data ({_mib(path):.1f} MiB, int8, calibrated on "
              f"{len(calibration)} frames, {time.perf_counter() - t1:.1f} s)")
        print("  " + check.line())
    print(f"labels: {', '.join(f'{i}={n}' for i, n in enumerate(card.labels))}; "
          f"alerts: {', '.join(card.alerts) or 'none'} (threshold {card.threshold}); "
          f"recipe: {card.recipe['name']}")
    return 0


def _mib(model: Path) -> float:
    """Size of a model with its weights file."""
    data = model.with_name(model.name + ".data")
    return (model.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 2**20
