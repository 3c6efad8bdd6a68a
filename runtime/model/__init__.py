"""The model: its card, its preparation recipes, its session and its decision rule."""

from __future__ import annotations

import os
from types import ModuleType

#: The environment variable naming the model when ``--model`` is not given. Here, so that
#: the light path of a one-shot answered by a server names it without loading anything.
MODEL_ENV = "FRAMEQC_MODEL"
#: The engine to run models on when ``--engine`` is not given (auto, onnxruntime, openvino);
#: here too, so that a one-shot's light path can match a server's engine.
ENGINE_ENV = "FRAMEQC_ENGINE"
#: onnxruntime's own opt-out of its telemetry, read when it is imported.
TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime() -> ModuleType:
    """onnxruntime, imported with its telemetry off: how every frameqc module imports it.

    onnxruntime 1.32 on Linux keeps a device id and an event database under ``~/.cache``
    and uploads a ProcessInfo event from every process, unless ``$ORT_DISABLE_TELEMETRY``
    is set before it is imported. frameqc runs at an observatory, often as a user with no
    home (the image's), where every one-shot also printed a warning. An operator's own
    setting of the variable is kept.
    """
    os.environ.setdefault(TELEMETRY_ENV, "1")
    import onnxruntime

    return onnxruntime


def resolve_model_path(model: str | os.PathLike | None, required: bool = True
                       ) -> str | os.PathLike | None:
    """``--model``, else ``$FRAMEQC_MODEL``: the one place a command's model is found.

    Neither set is an error naming both when a model is ``required``, else None. The
    name is returned as given (no pathlib: the light path of a one-shot answered by a
    server imports none).
    """
    chosen = model or os.environ.get(MODEL_ENV)
    if not chosen:
        if not required:
            return None
        from frameqc.runtime.errors import UsageError

        raise UsageError(f"no model: pass --model MODEL.onnx or set ${MODEL_ENV}")
    return chosen
