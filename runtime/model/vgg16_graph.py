"""The upstream network as an ONNX graph built from numpy arrays, without torch.

Parameters are named as torchvision's vgg16 ``state_dict`` (``features.0.weight``, ...,
``classifier.6.3.bias``), so a graph built here computes what the exported one does.
Used by ``frameqc demo``, which must work with no torch on the machine.

At 224 px the last feature map is 7x7 and torchvision's ``AdaptiveAvgPool2d((7, 7))`` does
nothing, so a fixed-size graph has no pooling. A graph for any size (``size=None``) pools
exactly as torchvision does, with two averaging matrices built from the feature map's
shape inside the graph (:func:`_exact_pool`), as the exported one does
(``export/any_size.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: torchvision's vgg16 "D" configuration: conv widths, M = 2x2 max-pool.
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M")
INPUT, OUTPUT = "image", "probabilities"
FEATURES = "classifier.3.relu"  # the 4096 features the transfer head reads


def conv_indices() -> list[int]:
    """The ``features.N`` indices of the 13 convolutions."""
    out, i = [], 0
    for v in CONFIG:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


def iter_random_params(n_classes: int, hidden: int = 256, seed: int = 0,
                       block: int = 512) -> Iterator[tuple[str, np.ndarray]]:
    """Parameters drawn as torchvision initialises vgg16 (Kaiming fan-out convs, N(0, 0.01)).

    One tensor at a time, the large ones in blocks of ``block`` rows (the same numbers as
    one draw: the generator is consumed in order), so 528 MB of weights can be written
    out without ever being held at once.
    """
    rng = np.random.default_rng(seed)
    c_in = 3
    for idx, c_out in zip(conv_indices(), [v for v in CONFIG if v != "M"], strict=True):
        std = np.sqrt(2.0 / (c_out * 9))
        yield (f"features.{idx}.weight",
               rng.standard_normal((c_out, c_in, 3, 3), np.float32) * np.float32(std))
        yield f"features.{idx}.bias", np.zeros(c_out, np.float32)
        c_in = c_out
    for name, (n_out, n_in) in {"classifier.0": (4096, 512 * 7 * 7),
                                "classifier.3": (4096, 4096),
                                "classifier.6.0": (hidden, 4096),
                                "classifier.6.3": (n_classes, hidden)}.items():
        for start in range(0, n_out, block):
            rows = min(block, n_out - start)
            yield (f"{name}.weight", rng.standard_normal((rows, n_in), np.float32)
                   * np.float32(0.01))
        yield f"{name}.bias", np.zeros(n_out, np.float32)


def random_params(n_classes: int, hidden: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """:func:`iter_random_params` as whole arrays, by name."""
    blocks: dict[str, list[np.ndarray]] = {}
    for name, value in iter_random_params(n_classes, hidden, seed):
        blocks.setdefault(name, []).append(value)
    return {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in blocks.items()}


def write_params(params: Iterable[tuple[str, np.ndarray]], data: Path) -> dict[str, Any]:
    """Write parameters (blocks of one tensor in a row) to the weights file ``data``.

    Returns each tensor as an ONNX initializer that refers to its bytes in the file, for
    :func:`build_graph`: the weights never pass through a protobuf in memory.
    """
    from onnx import TensorProto

    spans: dict[str, list] = {}
    with open(data, "wb") as fh:
        for name, value in params:
            value = np.ascontiguousarray(value, np.float32)
            span = spans.setdefault(name, [fh.tell(), 0, list(value.shape)])
            if span[1]:
                span[2][0] += value.shape[0]
            span[1] += value.nbytes
            value.tofile(fh)
    out = {}
    for name, (offset, length, shape) in spans.items():
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=shape)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data.name), ("offset", str(offset)),
                           ("length", str(length))):
            tensor.external_data.add(key=key, value=value)
        out[name] = tensor
    return out


def _exact_pool(add, x: str, consts: dict[str, np.ndarray]) -> str:
    """torchvision's ``AdaptiveAvgPool2d((7, 7))`` for any feature map: ``P_h X P_w^T``.

    Row i of ``P`` averages positions ``floor(i*L/7)`` to ``ceil((i+1)*L/7) - 1`` of a side
    L (integer division of non-negative numbers floors); Einsum keeps it out of int8.
    """
    cells = 7
    consts.update({"pool.i": np.arange(cells, dtype=np.int64),
                   "pool.i1": np.arange(1, cells + 1, dtype=np.int64),
                   "pool.n": np.array(cells, np.int64), "pool.n1": np.array(cells - 1, np.int64),
                   "pool.zero": np.array(0, np.int64), "pool.one": np.array(1, np.int64),
                   "pool.axis0": np.array([0], np.int64), "pool.axis1": np.array([1], np.int64)})
    shape = add("Shape", [x], "pool.shape")
    mats = []
    for axis, side in ((2, "h"), (3, "w")):
        consts[f"pool.{side}.axis"] = np.array(axis, np.int64)
        n = add("Gather", [shape, f"pool.{side}.axis"], f"pool.{side}.L", axis=0)
        start = add("Div", [add("Mul", ["pool.i", n], f"pool.{side}.iL"), "pool.n"],
                    f"pool.{side}.start")
        end = add("Div", [add("Add", [add("Mul", ["pool.i1", n], f"pool.{side}.i1L"),
                                      "pool.n1"], f"pool.{side}.up"), "pool.n"],
                  f"pool.{side}.end")
        pos = add("Unsqueeze", [add("Range", ["pool.zero", n, "pool.one"], f"pool.{side}.pos"),
                                "pool.axis0"], f"pool.{side}.row")
        lo = add("Unsqueeze", [start, "pool.axis1"], f"pool.{side}.lo")
        hi = add("Unsqueeze", [end, "pool.axis1"], f"pool.{side}.hi")
        inside = add("And", [add("GreaterOrEqual", [pos, lo], f"pool.{side}.ge"),
                             add("Less", [pos, hi], f"pool.{side}.lt")], f"pool.{side}.in")
        count = add("Cast", [add("Sub", [hi, lo], f"pool.{side}.n")], f"pool.{side}.count",
                    to=1)
        mats.append(add("Div", [add("Cast", [inside], f"pool.{side}.mask", to=1), count],
                        f"pool.{side}.P"))
    y = add("Einsum", [x, mats[1]], "pool.cols", equation="nchw,jw->nchj")
    return add("Einsum", [mats[0], y], "avgpool", equation="ih,nchj->ncij")


def build_graph(params: dict[str, Any], output: str = "probabilities",
                metadata: dict[str, str] | None = None, size: int | None = 224,
                features: bool = False):
    """An ``onnx.ModelProto``: ``image [batch, 3, size, size]`` -> ``output``.

    ``size=None``: any height and width from 32 px up, pooled as torchvision pools.

    ``params`` are numpy arrays, or initializers from :func:`write_params`.
    ``output="features"`` stops after ``classifier.4`` (the 4096 ReLU features the
    transfer head reads); ``features`` adds them as a second output of the whole
    network, for fitting a head.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, x = [], INPUT

    def add(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    i = 0
    for v in CONFIG:
        if v == "M":
            x = add("MaxPool", [x], f"features.{i}", kernel_shape=[2, 2], strides=[2, 2])
            i += 1
        else:
            x = add("Conv", [x, f"features.{i}.weight", f"features.{i}.bias"],
                    f"features.{i}", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x = add("Relu", [x], f"features.{i + 1}")
            i += 2
    consts: dict[str, np.ndarray] = {}
    if size is None:
        x = _exact_pool(add, x, consts)
    x = add("Flatten", [x], "flatten", axis=1)
    used = [k for k in params if k.startswith("features.")]
    layers = ["classifier.0", "classifier.3"]
    if output != "features":
        layers += ["classifier.6.0", "classifier.6.3"]
    for layer in layers:
        x = add("Gemm", [x, f"{layer}.weight", f"{layer}.bias"], layer, transB=1)
        used += [f"{layer}.weight", f"{layer}.bias"]
        if layer != "classifier.6.3":
            x = add("Relu", [x], layer + ".relu")
    if output == "features":
        out_dim = _shape(params["classifier.3.weight"])[0]
    else:
        x = add("LogSoftmax", [x], "classifier.6.4", axis=1)
        x = add("Exp", [x], "exp")
        out_dim = _shape(params["classifier.6.3.weight"])[0]
    nodes[-1].output[0] = output
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", out_dim])]
    if features:
        outputs.append(helper.make_tensor_value_info(
            FEATURES, TensorProto.FLOAT, ["batch", _shape(params["classifier.3.weight"])[0]]))
    side = ["height", "width"] if size is None else [size, size]
    graph = helper.make_graph(
        nodes, "frameqc_vgg16",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, *side])],
        outputs, initializer=[params[k] if isinstance(params[k], onnx.TensorProto)
                              else numpy_helper.from_array(np.ascontiguousarray(params[k]), k)
                              for k in used]
        + [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="frameqc")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    inline = not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    if inline and model.ByteSize() < 2**31:  # external weights are checked by their session
        onnx.checker.check_model(model, full_check=False)
    return model


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.dims) if hasattr(value, "dims") else value.shape
