"""Export to ONNX with the TorchScript exporter, embed the card, validate against torch.

Nothing is left at the output path unless it passed: the model (``OUT.onnx`` with the
graph and card, ``OUT.onnx.data`` with the weights) is staged in a folder beside it,
checked, compared with torch, and only then moved into place.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frameqc.export.gate import (
    INPUT,
    OUTPUT,
    ExportError,
    Verdict,
    batched,
    gated_card,
    judge_engines,
    refusal,
    run_model,
)
from frameqc.export.gate import judge as judge_int8  # noqa: F401 -- the int8 rule's old name
from frameqc.export.quantize import calibrate, int8_path
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.install import discard_stage, install_model, stage_model

OPSET = 17


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
            checks.append(compare(f"onnx vs torch, {name}", ref, run_model(staged, batches)))
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


def reduced_engines(precision: str) -> list[str]:
    """The engines a reduced model is judged on here: those installed that can run it."""
    from frameqc.runtime.model.engines import installed

    if precision == "bf16":
        return ["openvino"]
    return [n for n in ("onnxruntime", "openvino") if installed(n)]


def keep_reduced(fp32: Path, raw: Path, target: Path, card: ModelCard, precision: str,
                 frames: list[np.ndarray], min_agreement: float, margin: float
                 ) -> dict[str, Verdict]:
    """Judge ``raw`` on every engine that may run it; install it at ``target`` or refuse.

    The primary engine (onnxruntime for int8, OpenVINO for bf16) must pass; another
    engine that fails is left out of the card, so the runtime never runs it there.
    """
    import onnx

    names = reduced_engines(precision)
    verdicts = judge_engines(fp32, raw, card, frames, names, precision, margin)
    primary = names[0]
    if not verdicts[primary].passes(min_agreement):
        raise refusal(verdicts[primary], min_agreement, fp32)
    staged = stage_model(with_card(onnx.load(str(raw)), gated_card(
        card, precision, verdicts, primary, min_agreement)), target)
    try:
        install_model(staged, target)
    finally:
        discard_stage(staged)
    return verdicts


def quantize_int8(fp32: Path, card: ModelCard, calibration: list[np.ndarray],
                  held_out: list[np.ndarray], min_agreement: float = 0.95,
                  margin: float = 0.05) -> tuple[Path, Verdict]:
    """Static QDQ int8 (:mod:`~frameqc.export.quantize`) calibrated on prepared frames,
    judged against fp32 on ``held_out`` frames the calibration did not see, on each
    engine that may run it (:func:`keep_reduced`).

    Below ``min_agreement`` of decisions kept, away from the threshold, it is refused and
    nothing is written; the fp32 model is left as it is. Returns the onnxruntime verdict.
    """
    target = int8_path(fp32)
    raw = target.with_name(f".{target.name}.{os.getpid()}.raw")
    try:
        calibrate(fp32, calibration, raw)
        verdicts = keep_reduced(fp32, raw, target, card, "int8", held_out, min_agreement,
                                margin)
        return target, verdicts["onnxruntime"]
    finally:
        raw.unlink(missing_ok=True)


def make_bf16(fp32: Path, card: ModelCard, frames: list[np.ndarray],
              min_agreement: float = 0.95, margin: float = 0.05) -> tuple[Path, Verdict]:
    """``NAME.bf16.onnx`` (:mod:`~frameqc.export.bf16`), judged against fp32 on ``frames``
    with OpenVINO's bf16 arithmetic on this CPU; refused like int8."""
    import onnx

    from frameqc.export.bf16 import bf16_path, check_can_bf16, to_bf16

    check_can_bf16()
    target = bf16_path(fp32)
    raw = target.with_name(f".{target.name}.{os.getpid()}.raw")
    staged = None
    try:
        staged = stage_model(to_bf16(onnx.load(str(fp32))), raw)
        verdicts = keep_reduced(fp32, staged, target, card, "bf16", frames, min_agreement,
                                margin)
        return target, verdicts["openvino"]
    finally:
        if staged is not None:
            discard_stage(staged)


def provenance() -> dict[str, str]:
    import onnx
    import torch

    from frameqc.runtime import __version__

    return {"frameqc_version": __version__, "torch_version": torch.__version__,
            "onnx_version": onnx.__version__,
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
