"""Export to ONNX with the TorchScript exporter, embed the card, validate against torch.

Nothing is left at the output path unless it passed: the model (``OUT.onnx`` with the
graph and card, ``OUT.onnx.data`` with the weights) is staged in a folder beside it,
checked, compared with torch, and only then moved into place.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frameqc.runtime.errors import FrameQCError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.decision import decide, doubtful
from frameqc.runtime.model.install import discard_stage, install_model, stage_model
from frameqc.runtime.model.session import open_session

OPSET = 17
INPUT, OUTPUT = "image", "probabilities"


class ExportError(FrameQCError):
    """The exported graph failed a check; nothing was left at the output path."""


@dataclass
class Check:
    """How an exported model compares with its reference on a set of inputs."""

    name: str
    n: int
    max_abs_dp: float
    agreement: float

    def line(self) -> str:
        return (f"{self.name:<24} n={self.n:<3} max|dp|={self.max_abs_dp:.2e}  "
                f"top-1 agreement={self.agreement:.1%}")


def compare(name: str, ref: np.ndarray, got: np.ndarray) -> Check:
    return Check(name, len(ref), float(np.max(np.abs(ref - got))),
                 float(np.mean(ref.argmax(1) == got.argmax(1))))


def with_card(model, card: ModelCard):
    """Store the card in the model's metadata_props (replacing any) and return the model."""
    del model.metadata_props[:]
    for key, value in card.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name, model.producer_version = "frameqc", card.frameqc_version
    return model


def run_onnx(path: Path, batches: list[np.ndarray]) -> np.ndarray:
    """The model's outputs as the runtime computes them: its own session options."""
    sess = open_session(path)
    return np.concatenate([sess.run(None, {INPUT: b})[0] for b in batches])


def batched(tensors: list[np.ndarray], size: int = 8) -> list[np.ndarray]:
    """Consecutive tensors of one shape stacked, up to ``size`` a batch and the runtime's
    pixel bound; outputs concatenated in batch order stay in input order."""
    from frameqc.runtime.engine.pipeline import BATCH_PIXELS

    out: list[list[np.ndarray]] = []
    for t in tensors:
        run = out[-1] if out else None
        if run is None or t.shape != run[0].shape or len(run) == size \
                or (len(run) + 1) * t.shape[-1] * t.shape[-2] > BATCH_PIXELS:
            out.append([t])
        else:
            run.append(t)
    return [np.stack(run).astype(np.float32) for run in out]


def export_fp32(module, card: ModelCard, out: Path, frames: list[np.ndarray],
                atol: float = 1e-4, seed: int = 0) -> list[Check]:
    """Export ``module`` (probabilities out) to ``out``; fail when ONNX and torch disagree.

    Checks: ``onnx.checker``; onnxruntime against torch on random inputs in [0, 1] and on
    the prepared ``frames``; any max |dp| above ``atol`` raises :class:`ExportError`.
    The files checked are the files installed (``out`` and ``out.data``), moved into
    place only once every check has passed.

    A card of ``input_sizes`` any exports a graph of any height and width
    (:mod:`~frameqc.export.any_size`), checked against ``module`` (torchvision's own
    adaptive pooling) on a random image at each of its CHECK_SIZES too.
    """
    import onnx
    import torch

    size = card.input_size
    exported, axes = module, {0: "batch"}
    if card.input_sizes == "any":
        from frameqc.export.any_size import AnySizeProbabilities

        exported = AnySizeProbabilities(module.net).eval()
        axes = {0: "batch", 2: "height", 3: "width"}
    raw = out.with_name(f".{out.name}.{os.getpid()}.raw")
    staged = None
    try:
        with torch.no_grad():
            torch.onnx.export(exported, torch.zeros(1, 3, size, size), str(raw), dynamo=False,
                              opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: axes, OUTPUT: {0: "batch"}},
                              do_constant_folding=True)
        staged = stage_model(with_card(onnx.load(str(raw)), card), out)
        raw.unlink()
        onnx.checker.check_model(str(staged))
        rng = np.random.default_rng(seed)
        sets = {"random inputs": [rng.random((3, size, size), np.float32) for _ in range(4)],
                "prepared frames": frames}
        if card.input_sizes == "any":
            from frameqc.export.any_size import random_images

            sets.update(random_images(rng))
        checks = []
        for name, tensors in sets.items():
            batches = batched(tensors)
            with torch.no_grad():
                ref = np.concatenate([module(torch.from_numpy(b)).numpy() for b in batches])
            checks.append(compare(f"onnx vs torch, {name}", ref, run_onnx(staged, batches)))
        worst = max(c.max_abs_dp for c in checks)
        if not worst <= atol:
            raise ExportError(f"ONNX and torch disagree: max|dp| {worst:.2e} > atol {atol:g}; "
                              "no model written")
        install_model(staged, out)
        return checks
    finally:
        raw.unlink(missing_ok=True)
        if staged is not None:
            discard_stage(staged)


@dataclass
class Int8Verdict:
    """How int8 decides against fp32 on held-out frames, and whether it may be kept.

    Frames whose fp32 decision sits within ``margin`` of flipping (an alert probability
    near the threshold, or two labels nearly tied) are counted apart: a flip there is a
    coin toss, not a fault of quantization. Agreement is judged on the other frames.
    When there are none (a model that is unsure of every frame), int8 is judged by its
    probabilities: it passes if none moved by more than ``margin``.
    """

    n: int
    near: int
    judged: int
    agreement: float
    near_flips: int
    mean_dp: float
    max_dp: float
    worst: int
    worst_fp32: list[float]
    worst_int8: list[float]
    margin: float

    def passes(self, min_agreement: float) -> bool:
        if self.judged:
            return self.agreement >= min_agreement
        return self.max_dp <= self.margin

    def line(self) -> str:
        if self.judged:
            judged = (f"decisions agree on {self.agreement:.1%} of {self.judged} away from "
                      "the threshold")
        else:  # no decision to judge: say what was judged instead
            judged = (f"no frame is away from the threshold, so int8 was judged by its "
                      f"probabilities alone (max |dp| {self.max_dp:.4f} "
                      f"{'<=' if self.max_dp <= self.margin else '>'} {self.margin:g})")
        return (f"int8 vs fp32, held-out: n={self.n}, {judged}; {self.near} within "
                f"+-{self.margin:g} of the threshold ({self.near_flips} flipped); |dp| mean "
                f"{self.mean_dp:.4f}, max {self.max_dp:.4f} (frame {self.worst}: fp32 "
                f"{_fmt(self.worst_fp32)} -> int8 {_fmt(self.worst_int8)})")

    def record(self) -> dict:
        """What the int8 model's card keeps, for ``frameqc info``."""
        return {"held_out": self.n, "judged": self.judged, "agreement": round(self.agreement, 4),
                "near_threshold": self.near, "margin": self.margin,
                "mean_abs_dp": round(self.mean_dp, 5), "max_abs_dp": round(self.max_dp, 5)}


def _fmt(p: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in p) + "]"


def judge_int8(fp32: np.ndarray, int8: np.ndarray, card: ModelCard,
               margin: float = 0.05) -> Int8Verdict:
    """Compare decisions (the card's rule) and probabilities of int8 against fp32."""
    said32 = [decide(p, card.labels, card.alerts, card.threshold).index for p in fp32]
    said8 = [decide(p, card.labels, card.alerts, card.threshold).index for p in int8]
    near = [doubtful(p, card.labels, card.alerts, card.threshold, margin) for p in fp32]
    judged = [a == b for a, b, n in zip(said32, said8, near, strict=True) if not n]
    dp = np.abs(fp32 - int8).max(axis=1)
    worst = int(dp.argmax())
    return Int8Verdict(
        n=len(fp32), near=sum(near), judged=len(judged),
        agreement=float(np.mean(judged)) if judged else 0.0,
        near_flips=sum(a != b for a, b, n in zip(said32, said8, near, strict=True) if n),
        mean_dp=float(dp.mean()), max_dp=float(dp.max()), worst=worst,
        worst_fp32=fp32[worst].tolist(), worst_int8=int8[worst].tolist(), margin=margin)


def int8_path(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    stem = out.name[:-5] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".int8.onnx")


def quantize_int8(fp32: Path, card: ModelCard, calibration: list[np.ndarray],
                  held_out: list[np.ndarray], min_agreement: float = 0.95,
                  margin: float = 0.05) -> tuple[Path, Int8Verdict]:
    """Static QDQ int8 (per-channel weights) calibrated on prepared frames.

    Calibration takes the 99.999th percentile of each activation, not its maximum, and
    the transfer head (``classifier.6``, 1 M weights, +3 MiB) stays fp32. On the tests'
    deliberately steep head, against plain MinMax: mean |dp| 0.057 -> 0.043, max 0.207
    -> 0.137, decisions away from the threshold kept 94.4 % -> 100 % (64 frames).

    onnxruntime's pre-processing (shape inference, graph optimisation) runs first. The
    result is judged against the fp32 model on ``held_out`` frames (:func:`judge_int8`):
    below ``min_agreement`` of decisions kept, away from the threshold, it is refused
    and nothing is written; the fp32 model is left as it is.
    """
    from frameqc.runtime.model import import_onnxruntime

    import_onnxruntime()  # before its quantization package: telemetry off
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from frameqc.export.calibration import chunked_reader

    target = int8_path(fp32)
    whole = fp32.with_name(f".{fp32.name}.{os.getpid()}.whole")
    pre = fp32.with_name(f".{fp32.name}.{os.getpid()}.pre")
    raw = target.with_name(f".{target.name}.{os.getpid()}.raw")
    staged = None
    try:
        onnx.save(onnx.load(str(fp32)), str(whole))  # quant_pre_process loses a .data file
        quant_pre_process(str(whole), str(pre), skip_symbolic_shape=True)
        head = [n.name for n in onnx.load(str(pre), load_external_data=False).graph.node
                if n.op_type in ("Gemm", "MatMul") and "classifier.6" in n.name]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's own chatter
            quantize_static(str(pre), str(raw), chunked_reader(INPUT, calibration),
                            extra_options={"CalibStridedMinMax": 1}, quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                            calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=head)
        batches = batched(held_out)
        verdict = judge_int8(run_onnx(fp32, batches), run_onnx(raw, batches), card, margin)
        if not verdict.passes(min_agreement):
            why = (f"its decisions agree with fp32 on {verdict.agreement:.1%} of "
                   f"{verdict.judged} held-out frames away from the threshold (< "
                   f"{min_agreement:.0%}; {verdict.near} more within +-{margin:g})"
                   if verdict.judged else
                   f"every held-out frame is within +-{margin:g} of the threshold and int8 "
                   f"moves a probability by {verdict.max_dp:.3f}")
            raise ExportError(
                f"int8 refused: {why}; the fp32 model {fp32.name} is kept. Give "
                "--calibration DIR with a few dozen real frames, or decide with "
                "--min-agreement/--margin")
        staged = stage_model(with_card(onnx.load(str(raw)), card.with_(
            precision="int8", quantization=verdict.record())), target)
        install_model(staged, target)
        return target, verdict
    finally:
        for tmp in (whole, pre, raw):
            tmp.unlink(missing_ok=True)
        if staged is not None:
            discard_stage(staged)


def provenance() -> dict[str, str]:
    import onnx
    import torch

    from frameqc.runtime import __version__

    return {"frameqc_version": __version__, "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
