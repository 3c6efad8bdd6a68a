"""The engines behind the one session owner (:mod:`frameqc.runtime.model.session`).

onnxruntime is always there (the base install); OpenVINO is the ``frameqc[openvino]``
extra. Which engines may run a model is the card's: an fp32 model any engine computing
float32; an int8 or bf16 model only the engines its export gate judged
(``quantization.engines`` in the card; an int8 card without it was judged on
onnxruntime). Among those, the CPU must be able to run the precision (bf16 needs bf16
units), and the fastest is found by measurement (:mod:`.choice`).

A CUDA provider would be one more name in :data:`ENGINES`, one module like
:mod:`.openvino`, and its case in :func:`refusal`.
"""

from __future__ import annotations

import importlib.util
import os

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model import ENGINE_ENV
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.engines.cpuflags import has_bf16

ENGINES = ("onnxruntime", "openvino")
AUTO = "auto"


def resolve_engine(engine: str | None = None) -> str:
    """``--engine``, else ``$FRAMEQC_ENGINE``, else ``auto`` (the fastest, measured)."""
    chosen = engine or os.environ.get(ENGINE_ENV) or AUTO
    if chosen not in (AUTO, *ENGINES):
        raise UsageError(f"engine must be auto, {' or '.join(ENGINES)}, not {chosen!r}")
    return chosen


def installed(name: str) -> bool:
    module = "onnxruntime" if name == "onnxruntime" else name
    return importlib.util.find_spec(module) is not None


def validated(card: ModelCard) -> tuple[str, ...]:
    """The engines whose arithmetic the card vouches for."""
    if card.precision == "fp32":
        return ENGINES
    judged = card.quantization.get("engines")
    if isinstance(judged, dict):
        return tuple(n for n in ENGINES if n in judged)
    return ("onnxruntime",) if card.precision == "int8" else ()


def refusal(name: str, card: ModelCard, flags: frozenset[str]) -> str | None:
    """Why engine ``name`` cannot run this model here (one line), or None if it can."""
    if name not in validated(card):
        judged = ", ".join(validated(card)) or "no engine"
        return (f"this {card.precision} model runs only on the engines its export gate "
                f"judged ({judged}), not on {name}")
    if not installed(name):
        return f"the {name} engine is not installed: pip install 'frameqc[{name}]'"
    if card.precision == "bf16" and not has_bf16(flags):
        return ("this CPU has no bf16 units (amx_bf16 or avx512_bf16 in /proc/cpuinfo): "
                "serve the fp32 or int8 model here")
    return None


def candidates(card: ModelCard, flags: frozenset[str]) -> list[str]:
    """The engines that can run this model here, computing what its card validated."""
    return [n for n in ENGINES if refusal(n, card, flags) is None]
