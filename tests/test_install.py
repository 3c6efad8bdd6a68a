"""Installing a model file beside the one in use: a reader never sees a mismatched pair."""

import threading

import numpy as np


def tiny_model(generation: int):
    """A graph whose output is its weights file's content: a mismatched pair shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from frameqc.runtime.model.card import ModelCard

    card = ModelCard(labels=("A", "B"), notes=str(generation))
    w = np.full((2, 4096), generation, np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["w"], ["probabilities"], axes=[1], keepdims=0)],
        "tiny", [], [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in card.to_metadata().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def test_replacing_a_model_never_shows_a_mismatched_pair(tmp_path):
    import onnxruntime as ort

    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model

    target = tmp_path / "model.onnx"
    install_model(stage_model(tiny_model(0), target), target)
    done, seen, bad = threading.Event(), [], []

    def reader() -> None:
        while not done.is_set():
            try:
                sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            except Exception:
                continue
            card = ModelCard.from_metadata(sess.get_modelmeta().custom_metadata_map)
            got = sess.run(None, {})[0][0]
            seen.append(got)
            if float(card.notes) != got:
                bad.append((card.notes, got))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for g in range(1, 40):
        install_model(stage_model(tiny_model(g), target), target)
    done.set()
    for t in threads:
        t.join()
    assert len(set(seen)) > 5 and not bad, bad[:3]
    assert len(list(tmp_path.glob("model.onnx.*.data"))) == 2  # this one and the previous
