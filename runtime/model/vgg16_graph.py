"""The upstream network as an ONNX graph built from numpy arrays, without torch.

Parameters are named as torchvision's vgg16 ``state_dict`` (``features.0.weight``, ...,
``classifier.6.3.bias``), so a graph built here computes what the exported one does.
Used by ``frameqc demo``, which must work with no torch on the machine.
"""

from __future__ import annotations

import numpy as np

#: torchvision's vgg16 "D" configuration: conv widths, M = 2x2 max-pool.
CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
          512, 512, 512, "M")
INPUT, OUTPUT = "image", "probabilities"


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


def random_params(n_classes: int, hidden: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Parameters drawn as torchvision initialises vgg16 (Kaiming fan-out convs, N(0, 0.01))."""
    rng = np.random.default_rng(seed)
    params, c_in = {}, 3
    for idx, c_out in zip(conv_indices(), [v for v in CONFIG if v != "M"], strict=True):
        std = np.sqrt(2.0 / (c_out * 9))
        params[f"features.{idx}.weight"] = rng.standard_normal(
            (c_out, c_in, 3, 3), np.float32) * np.float32(std)
        params[f"features.{idx}.bias"] = np.zeros(c_out, np.float32)
        c_in = c_out
    for name, (n_out, n_in) in {"classifier.0": (4096, 512 * 7 * 7),
                                "classifier.3": (4096, 4096),
                                "classifier.6.0": (hidden, 4096),
                                "classifier.6.3": (n_classes, hidden)}.items():
        params[f"{name}.weight"] = rng.standard_normal((n_out, n_in), np.float32) * np.float32(0.01)
        params[f"{name}.bias"] = np.zeros(n_out, np.float32)
    return params


def build_graph(params: dict[str, np.ndarray], output: str = "probabilities",
                metadata: dict[str, str] | None = None, size: int = 224):
    """An ``onnx.ModelProto``: ``image [batch, 3, size, size]`` -> ``output``.

    ``output="features"`` stops after ``classifier.4`` (the 4096 ReLU features the
    transfer head reads), for fitting a head.
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
        out_dim = params["classifier.3.weight"].shape[0]
    else:
        x = add("LogSoftmax", [x], "classifier.6.4", axis=1)
        x = add("Exp", [x], "exp")
        out_dim = params["classifier.6.3.weight"].shape[0]
    nodes[-1].output[0] = output
    graph = helper.make_graph(
        nodes, "frameqc_vgg16",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", out_dim])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(params[k]), k) for k in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="frameqc")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=False) if model.ByteSize() < 2**31 else None
    return model
