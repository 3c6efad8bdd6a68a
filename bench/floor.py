"""The floor of a cold one-shot: what it cannot avoid, with nothing of frameqc's own.

An interpreter, ``import numpy, onnxruntime``, a session from the graph cache's optimised
graph, and one inference of a 224x224 frame. The session options are the one-shot's
(``session_options(threads, prepack=want_prepack(precision), optimize=False)``: int8
prepacks, so that its digits are those of a server's or a batch's), written out here so
that no frameqc module is imported; tests/test_bench.py checks that they stay the same.
The benchmark adds the median time to read, bin and prepare a frame, measured in its own
process.

    python bench/floor.py GRAPH.onnx THREADS PREPACK(0|1)
"""

import os
import sys

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # as frameqc imports it

import numpy as np
import onnxruntime as ort


def options(threads: int, prepack: bool):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    return opts


if __name__ == "__main__":
    ort.set_default_logger_severity(3)
    session = ort.InferenceSession(sys.argv[1], options(int(sys.argv[2]), sys.argv[3] == "1"),
                                   providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)})
