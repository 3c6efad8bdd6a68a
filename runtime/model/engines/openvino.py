"""OpenVINO behind the session owner: a compiled model for the CPU, at fp32 or bf16.

Built only by :mod:`frameqc.runtime.model.session` (through :func:`open_openvino`), so a
model runs the same way wherever frameqc runs it. Imported only when chosen: OpenVINO is
the optional extra ``frameqc[openvino]`` and costs 0.15 s to import.

OpenVINO's CPU plugin computes in bf16 by default wherever the CPU has bf16 units (AMX
or AVX-512 bf16: on this project's AMD EPYC too). frameqc never takes that default: the
precision is the card's, set explicitly (``f32`` for fp32 and int8 models, ``bf16`` for
bf16 ones), and dynamic quantization of activations is off, so OpenVINO computes what the
card's gate validated.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np

from frameqc.runtime.errors import ModelError, UsageError

EXTRA = "pip install 'frameqc[openvino]'"


def import_openvino() -> ModuleType:
    """openvino, or a one-line error naming the extra."""
    try:
        import openvino
    except ImportError:
        raise UsageError(f"the openvino engine is not installed: {EXTRA}") from None
    return openvino


def version() -> str | None:
    """OpenVINO's version when installed (without importing it), else None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("openvino")
    except PackageNotFoundError:
        return None


def config(precision: str, threads: int) -> dict[str, Any]:
    """The compile options: the card's arithmetic, ``threads`` threads, one stream.

    One stream of ``threads`` threads answers one request as fast as it can (frameqc's
    callers queue for the CPUs, :meth:`Model.predict`); no pinning of threads to cores,
    since the machine is shared with the frames' preparation and other processes.
    """
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}


class OpenVINOSession:
    """A compiled model and its one infer request; ``run`` takes and gives numpy arrays."""

    engine = "openvino"

    def __init__(self, path: str | os.PathLike, precision: str, threads: int) -> None:
        ov = import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(path))
            self.compiled = core.compile_model(model, "CPU", config(precision, threads))
        except RuntimeError as exc:
            text = str(exc).strip().splitlines()
            raise ModelError(f"{path}: OpenVINO cannot load it ({text[0] if text else exc})"
                             ) from None
        self.request = self.compiled.create_infer_request()
        self.precision = precision

    def threads(self) -> int:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def arithmetic(self) -> str:
        """The precision OpenVINO computes in, as it says (``f32`` or ``bf16``)."""
        return str(self.compiled.get_property("INFERENCE_PRECISION_HINT")).replace(
            "<Type: '", "").replace("'>", "").replace("float32", "f32").replace(
            "bfloat16", "bf16")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for one batch (a copy: the request's buffer is reused)."""
        return np.array(self.request.infer({0: batch})[0], np.float32, copy=True)
