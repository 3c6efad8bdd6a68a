"""int8 by onnxruntime's static quantizer: which layers, which weights, which ranges.

Measured on the tests' deliberately steep head (64 held-out frames), against plain MinMax
with every layer int8: per-channel weights and the 99.999th percentile of each
activation (not its maximum, which one hot pixel sets) took mean |dp| 0.057 -> 0.043,
max 0.207 -> 0.137 and decisions away from the threshold 94.4 % -> 100 %; the transfer
head (``classifier.6``, 1 M weights, +3 MiB) stays fp32. :data:`KEEP_FP32` holds what
else stays fp32 (docs/performance.md gives the trials).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import numpy as np

from frameqc.export.gate import INPUT, batched

#: Nodes kept in fp32 beside the head, by name: the first convolution sees the prepared
#: frame itself (3 channels, 0.3 % of the work), where int8's 256 levels cost most.
KEEP_FP32 = ("classifier.6", "features.0")


def int8_path(out: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    stem = out.name[:-5] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".int8.onnx")


def calibrate(fp32: Path, calibration: list[np.ndarray], raw: Path) -> None:
    """Write the QDQ int8 graph of ``fp32`` to ``raw``, calibrated on prepared frames.

    onnxruntime's pre-processing (shape inference, graph optimisation) runs first, on a
    one-file copy (it loses a ``.data`` file); the copies are removed whatever happens.
    """
    import onnx

    from frameqc.runtime.model import import_onnxruntime

    import_onnxruntime()  # before its quantization package: telemetry off
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batched(calibration, 1))

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {INPUT: b}

    whole = fp32.with_name(f".{fp32.name}.{os.getpid()}.whole")
    pre = fp32.with_name(f".{fp32.name}.{os.getpid()}.pre")
    try:
        onnx.save(onnx.load(str(fp32)), str(whole))
        quant_pre_process(str(whole), str(pre), skip_symbolic_shape=True)
        kept = [n.name for n in onnx.load(str(pre), load_external_data=False).graph.node
                if n.op_type in ("Conv", "Gemm", "MatMul")
                and any(_is(n.name, k) for k in KEEP_FP32)]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator's own chatter
            quantize_static(str(pre), str(raw), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8,
                            activation_type=QuantType.QUInt8,
                            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                            calibrate_method=CalibrationMethod.Percentile,
                            nodes_to_exclude=kept)
    finally:
        for tmp in (whole, pre):
            tmp.unlink(missing_ok=True)


def _is(node: str, module: str) -> bool:
    """Whether a node belongs to ``module``: ``/net/features/features.0/Conv`` to
    ``features.0``, never to ``features.0`` a node of ``features.00``."""
    return re.search(rf"(^|/){re.escape(module)}($|[/._])", node) is not None
