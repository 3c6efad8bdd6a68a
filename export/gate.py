"""The gate of a reduced-precision model (int8, bf16): judged against fp32, kept or refused.

A reduced model is run by every engine that may run it here, each through the runtime's
own session owner, so the gate measures the arithmetic that will run; its verdicts go
into the card (``quantization``), and the engines it judged are the only ones the
runtime will run it on (:func:`frameqc.runtime.model.engines.validated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frameqc.runtime.errors import FrameQCError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.decision import decide, doubtful

INPUT, OUTPUT = "image", "probabilities"


class ExportError(FrameQCError):
    """The exported graph failed a check; nothing was left at the output path."""


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


def run_model(path: Path, batches: list[np.ndarray], engine: str = "onnxruntime",
              precision: str = "fp32") -> np.ndarray:
    """A model's outputs as the runtime computes them with ``engine``: its own sessions."""
    from frameqc.runtime.model.session import open_engine, open_session

    if engine == "onnxruntime":
        sess = open_session(path)
        return np.concatenate([sess.run(None, {INPUT: b})[0] for b in batches])
    sess = open_engine(engine, str(path), precision, None)
    return np.concatenate([sess.run(b[i:i + 1]) for b in batches for i in range(len(b))])


@dataclass
class Verdict:
    """How a reduced model decides against fp32 on frames, and whether it may be kept.

    Frames whose fp32 decision sits within ``margin`` of flipping (an alert probability
    near the threshold, or two labels nearly tied) are counted apart: a flip there is a
    coin toss, not a fault of the reduced precision. Agreement is judged on the other
    frames. When there are none (a model that is unsure of every frame), the model is
    judged by its probabilities: it passes if none moved by more than ``margin``.
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
    precision: str = "int8"
    engine: str = "onnxruntime"

    def passes(self, min_agreement: float) -> bool:
        if self.judged:
            return self.agreement >= min_agreement
        return self.max_dp <= self.margin

    def line(self) -> str:
        if self.judged:
            judged = (f"decisions agree on {self.agreement:.1%} of {self.judged} away from "
                      "the threshold")
        else:  # no decision to judge: say what was judged instead
            judged = (f"no frame is away from the threshold, so {self.precision} was judged "
                      f"by its probabilities alone (max |dp| {self.max_dp:.4f} "
                      f"{'<=' if self.max_dp <= self.margin else '>'} {self.margin:g})")
        return (f"{self.precision} vs fp32, held-out: n={self.n}, {judged}; "
                f"{self.near} within +-{self.margin:g} of the threshold ({self.near_flips} "
                f"flipped); |dp| mean {self.mean_dp:.4f}, max {self.max_dp:.4f} (frame "
                f"{self.worst}: fp32 {_fmt(self.worst_fp32)} -> {self.precision} "
                f"{_fmt(self.worst_int8)}); on {self.engine}")

    def record(self) -> dict:
        """What the reduced model's card keeps, for ``frameqc info``."""
        return {"held_out": self.n, "judged": self.judged, "agreement": round(self.agreement, 4),
                "near_threshold": self.near, "margin": self.margin,
                "mean_abs_dp": round(self.mean_dp, 5), "max_abs_dp": round(self.max_dp, 5)}


def _fmt(p: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in p) + "]"


def judge(fp32: np.ndarray, reduced: np.ndarray, card: ModelCard, margin: float = 0.05,
          precision: str = "int8", engine: str = "onnxruntime") -> Verdict:
    """Compare decisions (the card's rule) and probabilities of a reduced model with fp32."""
    said32 = [decide(p, card.labels, card.alerts, card.threshold).index for p in fp32]
    said = [decide(p, card.labels, card.alerts, card.threshold).index for p in reduced]
    near = [doubtful(p, card.labels, card.alerts, card.threshold, margin) for p in fp32]
    judged = [a == b for a, b, n in zip(said32, said, near, strict=True) if not n]
    dp = np.abs(fp32 - reduced).max(axis=1)
    worst = int(dp.argmax())
    return Verdict(
        n=len(fp32), near=sum(near), judged=len(judged),
        agreement=float(np.mean(judged)) if judged else 0.0,
        near_flips=sum(a != b for a, b, n in zip(said32, said, near, strict=True) if n),
        mean_dp=float(dp.mean()), max_dp=float(dp.max()), worst=worst,
        worst_fp32=fp32[worst].tolist(), worst_int8=reduced[worst].tolist(), margin=margin,
        precision=precision, engine=engine)


def judge_engines(fp32: Path, reduced: Path, card: ModelCard, frames: list[np.ndarray],
                  engines: list[str], precision: str, margin: float) -> dict[str, Verdict]:
    """The reduced model on each of ``engines`` against the fp32 model on onnxruntime."""
    batches = batched(frames)
    ref = run_model(fp32, batches)
    return {name: judge(ref, run_model(reduced, batches, name, precision), card, margin,
                        precision, name) for name in engines}


def refusal(verdict: Verdict, min_agreement: float, fp32: Path) -> ExportError:
    """Why a reduced model is refused, with what to do about it (one line)."""
    why = (f"its decisions agree with fp32 on {verdict.agreement:.1%} of {verdict.judged} "
           f"held-out frames away from the threshold (< {min_agreement:.0%}; {verdict.near} "
           f"more within +-{verdict.margin:g})" if verdict.judged else
           f"every held-out frame is within +-{verdict.margin:g} of the threshold and "
           f"{verdict.precision} moves a probability by {verdict.max_dp:.3f}")
    return ExportError(
        f"{verdict.precision} refused: {why}, on {verdict.engine}; the fp32 model "
        f"{fp32.name} is kept. Give --calibration DIR with a few dozen real frames, or "
        "decide with --min-agreement/--margin")


def gated_card(card: ModelCard, precision: str, verdicts: dict[str, Verdict], primary: str,
               min_agreement: float) -> ModelCard:
    """The reduced model's card: the primary engine's verdict, and each engine that passed."""
    from frameqc.runtime.model.engines.cpuflags import cpu_flags, units

    kept = {n: v.record() for n, v in verdicts.items() if v.passes(min_agreement)}
    return card.with_(precision=precision, quantization={
        **verdicts[primary].record(), "engines": kept, "cpu": units(cpu_flags())})
