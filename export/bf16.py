"""``NAME.bf16.onnx``: the fp32 model with its weights in bfloat16, run in bf16 by OpenVINO.

The weights are rounded to bfloat16 (to nearest, ties to even) and stored as such, each
followed by a Cast to float: the file is half the fp32 one, and onnxruntime can still
read its graph. The arithmetic is OpenVINO's bf16 (``INFERENCE_PRECISION_HINT=bf16``:
activations rounded to bf16 between layers, products accumulated in fp32) on a CPU with
bf16 units (AMX or AVX-512 bf16); the gate measures exactly that, on this machine, and
the card says so. onnxruntime has no bf16 convolution on CPU, so a bf16 model runs on
OpenVINO only: where OpenVINO or the CPU's bf16 units are missing it is refused in one
line (the fp32 or int8 model is what such a machine serves).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.engines.cpuflags import cpu_flags, has_bf16

#: Weights smaller than this stay fp32 (biases: a few kB, and no faster in bf16).
MIN_ELEMENTS = 1024


def bf16_path(out: Path) -> Path:
    """``model.onnx`` -> ``model.bf16.onnx``."""
    stem = out.name[:-5] if out.name.endswith(".onnx") else out.name
    return out.with_name(stem + ".bf16.onnx")


def check_can_bf16() -> None:
    """A one-line UsageError, before anything is exported, where bf16 cannot be checked."""
    from frameqc.runtime.model.engines import installed

    if not installed("openvino"):
        raise UsageError("--bf16 is measured with OpenVINO, which is not installed: "
                         "pip install 'frameqc[openvino]'")
    if not has_bf16(cpu_flags()):
        raise UsageError("--bf16 is measured with the arithmetic that will run, and this CPU "
                         "has no bf16 units (amx_bf16 or avx512_bf16): export it on one that has")


def round_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def to_bf16(model):
    """The fp32 ``ModelProto`` (weights loaded) with its large weights as bfloat16 + Cast."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < MIN_ELEMENTS:
            keep.append(init)
            continue
        values = numpy_helper.to_array(init)
        stored = TensorProto(name=init.name + ".bf16", data_type=TensorProto.BFLOAT16,
                             dims=init.dims, raw_data=round_bf16(values).tobytes())
        keep.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name],
                                      name=init.name + ".cast", to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return model
