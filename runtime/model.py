"""The model: one onnxruntime session and the card read from the same file.

This is the one place that owns session options (threads, optimisation), so every
entry point, one-shot or resident, runs the network the same way.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

from .card import ModelCard
from .errors import ModelError, UsageError

MODEL_ENV = "FRAMEQC_MODEL"
THREADS_ENV = "FRAMEQC_THREADS"
PREPACK_ENV = "FRAMEQC_PREPACK"  # auto (default), on, off
DATA_SUFFIX = ".data"  # MODEL.onnx keeps graph and card, MODEL.onnx.<token>.data the weights


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(n, quota) if quota else n)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs a container's cgroup allows (rounded down, at least 1), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]  # cgroup v2
        if quota == "max":
            return None
        return max(1, int(quota) // int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else max(1, quota // period)


def resolve_threads(threads: int | None) -> int:
    """``--threads``, else ``$FRAMEQC_THREADS``, else the CPUs this process may use."""
    if threads is None and os.environ.get(THREADS_ENV):
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise UsageError(f"${THREADS_ENV} must be a whole number") from None
    if threads is not None and threads < 1:
        raise UsageError("threads must be at least 1")
    return threads or available_cpus()


def want_prepack(precision: str, frames: int | None) -> bool:
    """Whether a session should prepack its weights, for a process that will see ``frames``.

    Prepacking rearranges the weights for the CPU's kernels while the session is built.
    Measured here (vgg16, 2 cores): it costs 0.80 s for fp32 and 0.29 s for int8, and
    pays back only for int8 (0.024 s a frame instead of 0.096 s; 0.16 s for a first frame
    instead of 0.025 s). fp32 runs as fast unpacked (0.077 s a frame either way). So fp32
    never prepacks, and int8 prepacks unless the process will see at most
    ``INT8_UNPACKED_FRAMES`` frames (a cron one-shot); a resident process (``frames``
    None) always does. ``$FRAMEQC_PREPACK`` = ``on`` or ``off`` overrides the rule.
    """
    choice = os.environ.get(PREPACK_ENV, "auto").lower()
    if choice in ("on", "off"):
        return choice == "on"
    if choice != "auto":
        raise UsageError(f"${PREPACK_ENV} must be auto, on or off, not {choice!r}")
    if precision != "int8":
        return False
    return frames is None or frames > INT8_UNPACKED_FRAMES


#: int8 runs of up to this many frames skip prepacking (see :func:`want_prepack`).
INT8_UNPACKED_FRAMES = 2


def read_card(path: str | os.PathLike) -> ModelCard | None:
    """The card of a model file read straight from its bytes (no onnx, no session).

    The ``.onnx`` holds the graph and the card only (the weights are in the ``.data``
    file), so this is a few kilobytes of protobuf: enough to choose session options
    before the session is built. None when the file cannot be read this way; the
    session then reports what is wrong with it.
    """
    try:
        with open(path, "rb") as fh:
            meta = _metadata_props(fh.read(16 << 20))
        return ModelCard.from_metadata(meta)
    except (OSError, ValueError, IndexError, ModelError):
        return None


def _metadata_props(buf: bytes) -> dict[str, str]:
    """``ModelProto.metadata_props`` (field 14: key 1, value 2) from serialized bytes."""
    out = {}
    for field, value in _fields(buf):
        if field == 14 and isinstance(value, bytes):
            entry = dict(_fields(value))
            out[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
    return out


def _fields(buf: bytes):
    """Top-level protobuf fields: (number, int or bytes); ValueError on a bad wire type."""
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i: i + n], i + n
        elif wire in (1, 5):
            value, i = None, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield field, value


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """``--model``, else ``$FRAMEQC_MODEL``; an error naming both when neither is set."""
    chosen = model or os.environ.get(MODEL_ENV)
    if not chosen:
        raise UsageError(f"no model: pass --model MODEL.onnx or set ${MODEL_ENV}")
    return Path(chosen)


class Model:
    """An exported frameqc model, ready to run on the CPU.

    Parameters
    ----------
    path : path
        A ``.onnx`` file written by ``frameqc export`` (or ``frameqc demo``).
    threads : int, optional
        onnxruntime intra-op threads; default :func:`resolve_threads`.
    frames : int, optional
        How many frames this process will classify; None for a resident process. It
        decides whether weights are prepacked (:func:`want_prepack`).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 frames: int | None = None) -> None:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)  # warnings about telemetry are not for operators
        ort.disable_telemetry_events()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = resolve_threads(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # no busy-waiting between operators: frames are prepared on the same cores while
        # the network runs (measured: 100 frames in 5.6 s instead of 5.9 s), and a resident
        # server stays idle between requests
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        early = read_card(os.path.realpath(self.path))
        self.prepacked = want_prepack(early.precision if early else "fp32", frames)
        opts.add_session_config_entry("session.disable_prepacking",
                                      "0" if self.prepacked else "1")
        try:  # the real path: the weights file is found beside the file, not the link
            self.session = ort.InferenceSession(os.path.realpath(self.path), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            text = str(exc).strip()
            missing = re.search(r'External data path does not exist: "?([^"\n]+)', text)
            if missing:
                raise ModelError(f"{self.path}: its weights file {missing.group(1)} is missing "
                                 "(keep the .data file exported with it beside it)") from None
            first = text.splitlines()[0] if text else type(exc).__name__
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first[:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.card = ModelCard.from_metadata(meta)
        except ModelError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        self.threads = opts.intra_op_num_threads
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities, ``(n, n_labels)`` float32, for a ``(n, 3, S, S)`` batch.

        Calls are serialised: concurrent callers (server clients) queue for the CPUs
        instead of splitting them, so each answer comes as fast as it can.
        """
        import numpy as np

        feed = {self.input_name: np.ascontiguousarray(batch, np.float32)}
        with self._lock:
            return self.session.run([self.output_name], feed)[0]


def weights_file(model: str | os.PathLike) -> Path | None:
    """The weights file a model's graph names (beside its real path); None if it has none."""
    import onnx

    real = Path(os.path.realpath(model))
    proto = onnx.load(str(real), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                return real.with_name(entry.value)
    return None


def stage_model(proto, target: Path) -> Path:
    """Write ``proto`` as ``target`` + its weights file in a staging folder beside ``target``.

    The weights go to ``TARGET.<token>.data``, which onnxruntime memory-maps: an int8
    session then builds in half the time and peaks about 30 MB lower than from one file.
    The token is new for every export, so the weights of a new model never take the name
    an old graph refers to (see :func:`install_model`). Returns the staged ``.onnx``,
    loadable as it is, for validation before :func:`install_model`.
    """
    import onnx

    stage = target.parent / f".{target.name}.{os.getpid()}.stage"
    stage.mkdir(parents=True, exist_ok=True)
    staged = stage / target.name
    location = f"{target.name}.{secrets.token_hex(4)}{DATA_SUFFIX}"
    onnx.save_model(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    data = stage / location
    if data.exists():  # a model with no large tensor has none
        shutil.copymode(staged, data)  # onnx creates it 0600
    return staged


def install_model(staged: Path, target: Path) -> None:
    """Move a staged model into place so that no reader ever sees a mismatched pair.

    The new weights arrive under their own new name first, then the graph replaces the
    old one in one rename: a reader gets either the old graph (whose weights file is
    still there) or the new graph with its weights. The previous model's weights are
    kept until the next install, for a reader that opened the old graph just before;
    older ones are removed.
    """
    previous = weights_file(target) if target.exists() else None
    data = [p for p in staged.parent.iterdir() if p.name.endswith(DATA_SUFFIX)]
    for p in data:
        os.replace(p, target.parent / p.name)
    os.replace(staged, target)
    discard_stage(staged)
    keep = {previous, *(target.parent / p.name for p in data)}
    for old in target.parent.glob(f"{target.name}.*{DATA_SUFFIX}"):
        if old not in keep and old.name.count(".") - target.name.count(".") <= 2:
            old.unlink(missing_ok=True)


def discard_stage(staged: Path) -> None:
    shutil.rmtree(staged.parent, ignore_errors=True)
