"""``frameqc export``: registered into the runtime CLI through an entry point.

Importing this module needs no torch; the command checks for it and says how to get it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from frameqc.runtime.commands.options import (
    fraction,
    non_negative_float,
    positive_float,
    positive_int,
    probability,
)
from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.recipes import recipe_help, recipe_names

#: Synthetic frames when none are given: int8 is calibrated on up to CALIBRATION_FRAMES and
#: judged on the rest (64 with the defaults), fp32 is checked against torch on
#: VALIDATION_FRAMES of them.
SYNTHETIC_FRAMES, CALIBRATION_FRAMES, VALIDATION_FRAMES = 96, 32, 24

DESCRIPTION = """\
Export a vgg16 transfer-learning state_dict (torch.save) to ONNX, with the model card
(labels, alerts, threshold, preparation recipe, provenance) inside the model file.
The export is validated against torch before it is kept; --int8 also writes
OUT.int8.onnx, calibrated on frames prepared by the runtime's recipe; --bf16 writes
OUT.bf16.onnx for OpenVINO's bf16 arithmetic (a CPU with AMX or AVX-512 bf16, and the
openvino extra). Each is judged against fp32 and refused if its decisions move."""

EPILOG = """\
examples:
  frameqc export vgg16-transfer-touse2.pt --card models/touse2.toml -o touse2.onnx --int8
  frameqc export vgg16-transfer-touse2.pt --card models/touse2.toml -o touse2.onnx --bf16
  frameqc export weights.pt --labels Wobble,OK --alert Wobble --threshold 0.6 \\
      --recipe rgb -o wobble.onnx"""


def _card_args(p: argparse.ArgumentParser) -> None:
    """What the model means: a card file and/or flags on top of it (export and train)."""
    p.add_argument("--card", metavar="CARD.toml",
                   help="labels, alerts, threshold and recipe from a card file (models/)")
    p.add_argument("--labels", help="class names in output index order, comma-separated")
    p.add_argument("--alert", action="append", metavar="LABEL",
                   help="a label given only at or above the threshold (repeatable)")
    p.add_argument("--threshold", type=probability, help="alert threshold (default 0.5)")
    p.add_argument("--recipe", choices=recipe_names(), help=recipe_help())


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx")
    p.add_argument("--bf16", action="store_true",
                   help="also write OUT.bf16.onnx (OpenVINO's bf16; needs the openvino extra "
                        "and a CPU with AMX or AVX-512 bf16)")
    p.add_argument("--atol", type=positive_float, default=1e-4,
                   help="largest |dp| allowed between ONNX and torch (default 1e-4)")
    p.add_argument("--min-agreement", type=probability, default=0.95, metavar="F",
                   help="int8 and bf16 are kept only if their decisions agree with fp32 on "
                        "this share of held-out frames away from the threshold (default 0.95)")
    p.add_argument("--margin", type=non_negative_float, default=0.05, metavar="P",
                   help="frames whose fp32 decision would move with probabilities moved by "
                        "P are set apart from that judgement (default 0.05)")


def export_command(sub) -> None:
    """Add the ``export`` subcommand to the ``frameqc`` parser."""
    p = sub.add_parser("export", help="export a vgg16 state_dict to a validated ONNX model "
                       "(needs the export extra)", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", metavar="WEIGHTS.pt")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx")
    _card_args(p)
    _export_args(p)
    p.add_argument("--calibration", metavar="DIR",
                   help="frames to validate and calibrate on (default: synthetic frames)")
    p.set_defaults(func=run_export)


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


def sized_card(card: ModelCard) -> ModelCard:
    """The card with the input sizes its recipe's network takes: any size (a graph of any
    height and width) for a recipe that prepares each frame at its own size."""
    from frameqc.runtime.model.recipes import recipe_class

    return card.with_(input_sizes="any" if recipe_class(card.recipe["name"]).any_size
                      else "fixed")


def _need_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UsageError(f"{command} needs torch: pip install 'frameqc[export]'") from None


def _output(path: str) -> Path:
    out = Path(path)
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such directory for the output")
    return out


def _need_bf16(args: argparse.Namespace) -> None:
    """--bf16 where it cannot be measured is refused before anything is written."""
    if args.bf16:
        from frameqc.export.bf16 import check_can_bf16

        check_can_bf16()


def run_export(args: argparse.Namespace) -> int:
    _need_torch("export")
    _need_bf16(args)
    from frameqc.export.calibration import directory_tensors, synthetic_tensors
    from frameqc.export.weights import load_weights
    from frameqc.runtime.model.recipes import recipe_for

    card = sized_card(resolve_card(args))
    recipe = recipe_for(card)
    out = _output(args.output)
    weights = load_weights(args.weights)
    if args.calibration:
        frames = directory_tensors(recipe, args.calibration)
    else:
        if args.int8 or args.bf16:
            print("frameqc export: warning: no --calibration frames; judging "
                  f"{'int8' if args.int8 else 'bf16'} on synthetic frames", file=sys.stderr)
        frames = synthetic_tensors(recipe, SYNTHETIC_FRAMES if args.int8 or args.bf16 else 12)
    export_weights(weights, card, out, frames, int8=args.int8, atol=args.atol,
                   min_agreement=args.min_agreement, margin=args.margin, bf16=args.bf16)
    return 0


def export_weights(weights, card: ModelCard, out: Path, frames: list, int8: bool = False,
                   atol: float = 1e-4, min_agreement: float = 0.95, margin: float = 0.05,
                   bf16: bool = False) -> None:
    """Export checked ``weights`` with ``card`` to ``out`` (and its int8/bf16 twins); print
    a report.

    ``frames`` are prepared tensors: up to VALIDATION_FRAMES of them check fp32 against
    torch; for int8, up to CALIBRATION_FRAMES (at most two thirds) calibrate and the rest
    are held out to judge it; bf16 (nothing to calibrate) is judged on the same held-out
    frames.
    """
    from frameqc.export.calibration import size_names
    from frameqc.export.network import Probabilities, build_vgg16
    from frameqc.export.onnx_export import export_fp32, make_bf16, provenance, quantize_int8
    from frameqc.runtime.model.recipes import recipe_for

    t0 = time.perf_counter()
    if weights.n_classes != len(card.labels):
        raise UsageError(f"the weights have {weights.n_classes} outputs but "
                         f"{len(card.labels)} labels were given ({', '.join(card.labels)})")
    card = sized_card(card)
    recipe = recipe_for(card)
    checked = size_names(frames[:VALIDATION_FRAMES])
    if card.input_sizes == "any":
        from frameqc.export.any_size import CHECK_SIZES

        checked = list(dict.fromkeys([f"{w}x{h}" for h, w in CHECK_SIZES] + checked))
    card = card.with_(recipe=recipe.params(), weights_sha256=weights.sha256,
                      weights_name=weights.name, precision="fp32",
                      sizes_checked={"fp32_vs_torch": checked}, **provenance())
    net = build_vgg16(weights.n_classes, weights.hidden)
    net.load_state_dict(weights.state_dict, strict=True)
    module = Probabilities(net).eval()
    n_cal = min(CALIBRATION_FRAMES, max(1, (len(frames) * 2) // 3))
    calibration, held_out = frames[:n_cal], frames[n_cal:] or frames

    checks = export_fp32(module, card, out, frames[:VALIDATION_FRAMES], atol=atol)
    print(f"wrote {out} + .data ({_mib(out):.1f} MiB, fp32, {time.perf_counter() - t0:.1f} s)")
    for c in checks:
        print("  " + c.line())
    if int8:
        t1 = time.perf_counter()
        gate = card.with_(sizes_checked={**card.sizes_checked,
                                         "int8_calibration": size_names(calibration),
                                         "int8_gate": size_names(held_out)})
        path, verdict = quantize_int8(out, gate, calibration, held_out, min_agreement, margin)
        _report(path, f"int8, calibrated on {len(calibration)} frames", t1, verdict, margin)
    if bf16:
        t1 = time.perf_counter()
        gate = card.with_(sizes_checked={**card.sizes_checked,
                                         "bf16_gate": size_names(held_out)})
        path, verdict = make_bf16(out, gate, held_out, min_agreement, margin)
        _report(path, "bf16", t1, verdict, margin)
    print(f"labels: {', '.join(f'{i}={n}' for i, n in enumerate(card.labels))}; "
          f"alerts: {', '.join(card.alerts) or 'none'} (threshold {card.threshold}); "
          f"recipe: {card.recipe['name']}")


def _report(path: Path, what: str, t1: float, verdict, margin: float) -> None:
    """What a reduced model's gate found, every engine it judged (printed by export)."""
    from frameqc.runtime.model.peek import read_card

    print(f"wrote {path} + .data ({_mib(path):.1f} MiB, {what}, "
          f"{time.perf_counter() - t1:.1f} s)")
    print("  " + verdict.line())
    card = read_card(path)
    judged = card.quantization.get("engines", {}) if card else {}
    for name, rec in judged.items():
        if name != verdict.engine:
            print(f"  on {name}: |dp| mean {rec['mean_abs_dp']:.4f}, max {rec['max_abs_dp']:.4f}"
                  f", decisions agree on {rec['agreement']:.1%}")
    p = verdict.precision
    if verdict.judged == 0:
        print(f"frameqc export: warning: every held-out frame is within +-{margin:g} of the "
              f"threshold, so {p} was judged by its probabilities alone (max |dp| "
              f"{verdict.max_dp:.4f})", file=sys.stderr)
    elif verdict.judged < 30:
        print(f"frameqc export: warning: {p} judged on only {verdict.judged} frames; give "
              "more --calibration frames for a firmer verdict", file=sys.stderr)


# -- train ------------------------------------------------------------------------------

TRAIN_DESCRIPTION = """\
Fine-tune the upstream network (vgg16 + its transfer head) on labelled frames
(DATA/<label>/*.fits, or a CSV of path,label), starting from existing weights. Frames are
prepared by the runtime's own recipe. The layers not trained are run once per frame and
cached, so epochs are cheap on a CPU (CUDA is used when torch sees it). The best epoch on
the validation frames is kept and written as a state_dict with the upstream keys; --export
also writes the validated ONNX model, its card recording the training."""

TRAIN_EPILOG = """\
examples:
  frameqc train labelled/ --init vgg16-transfer-touse2.pt --card models/touse2.toml \\
      -o touse3.pt --export touse3.onnx --int8
  frameqc train labelled/ --init touse2.pt --labels Shutter,OK --alert Shutter \\
      --val held-out/ --epochs 30 --seed 7 -o touse3.pt"""


def train_command(sub) -> None:
    """Add the ``train`` subcommand to the ``frameqc`` parser."""
    from frameqc.export.train import TUNE, Config

    d = Config()
    p = sub.add_parser("train", help="fine-tune the network on labelled frames "
                       "(needs the export extra)", description=TRAIN_DESCRIPTION,
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="labelled folder or CSV of path,label")
    p.add_argument("--init", required=True, metavar="WEIGHTS.pt|imagenet",
                   help="weights to start from (a state_dict, or torchvision's cached "
                        "ImageNet vgg16)")
    p.add_argument("-o", "--output", required=True, metavar="NEW.pt")
    _card_args(p)
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val", metavar="DATA2", help="labelled frames to validate on")
    val.add_argument("--val-fraction", type=fraction, default=0.2, metavar="F",
                     help="else hold out this fraction of each label (default 0.2)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"Adam learning rate ({d.lr:g})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed, help="for everything random (0)")
    p.add_argument("--tune", choices=TUNE, default=d.tune,
                   help="what is trained: the head (default), the whole classifier, or "
                        "also block5's convolutions")
    p.add_argument("--export", metavar="NEW.onnx", help="also export the trained model")
    _export_args(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    _need_torch("train")
    from frameqc.export.train import Config, train_model
    from frameqc.export.weights import load_weights
    from frameqc.runtime.lifecycle.labelled import LabelledSet

    card = resolve_card(args)
    out = _output(args.output)
    onnx_out = _output(args.export) if args.export else None
    if (args.int8 or args.bf16) and not onnx_out:
        raise UsageError(f"--{'int8' if args.int8 else 'bf16'} goes with --export NEW.onnx")
    _need_bf16(args)
    data = LabelledSet.load(args.data, card.labels)
    val = LabelledSet.load(args.val, card.labels) if args.val else None
    cfg = Config(args.epochs, args.lr, args.batch_size, args.seed, args.tune)
    record, frames = train_model(data, val, args.val_fraction, args.init, card, out, cfg)
    if onnx_out:
        export_weights(load_weights(out), trained_card(card, record), onnx_out, frames,
                       int8=args.int8, atol=args.atol, min_agreement=args.min_agreement,
                       margin=args.margin, bf16=args.bf16)
    return 0


def trained_card(card: ModelCard, record: dict) -> ModelCard:
    """The card of a model ``train`` made: the meaning (labels, alerts, recipe) is the
    given card's, the prose is not: a parent's ``notes`` ("2022 retrain (production)")
    would describe another model, so they say what this one is, from its training record.
    """
    frames = sum(record["data_counts"].values())
    notes = (f"trained by frameqc train {record['trained_at']}: {record['tune']} tuned from "
             f"{record['parent'] or 'its init weights'} on {frames} frames, validation "
             f"accuracy {record['validation']['accuracy']:.3f} (epoch {record['best_epoch']} "
             f"of {record['epochs']})")
    return card.with_(training=record, notes=notes)


def _mib(model: Path) -> float:
    """Size of a model with its weights file."""
    from frameqc.runtime.model.install import weights_file

    data = weights_file(model)
    return (model.stat().st_size + (data.stat().st_size if data else 0)) / 2**20
