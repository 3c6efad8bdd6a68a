"""Loading a vgg16 transfer-learning ``state_dict`` safely, and reading its head's sizes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from frameqc.runtime.errors import UsageError

#: torchvision vgg16's own keys up to the replaced ``classifier[6]``.
VGG16_CONV = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
BODY_KEYS = {f"features.{i}.{p}" for i in VGG16_CONV for p in ("weight", "bias")} | {
    f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
HEAD_KEYS = {f"classifier.6.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}


@dataclass
class Weights:
    """A checked state_dict with its sizes and the sha256 of the file it came from."""

    state_dict: dict
    hidden: int
    n_classes: int
    sha256: str
    name: str


def _unwrap(obj) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def load_weights(path: str | Path) -> Weights:
    """Load with ``weights_only=True`` on the CPU and check it is vgg16 with the head.

    Accepts a bare state_dict, a dict holding ``state_dict`` or ``model_state_dict``,
    and keys prefixed ``module.`` (DataParallel).

    Raises
    ------
    UsageError
        Missing or unreadable file, or not a vgg16 with ``Linear -> ReLU -> Dropout ->
        Linear -> LogSoftmax`` as ``classifier[6]``.
    """
    import torch

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        import io

        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle or zip
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UsageError(f"{path}: not a loadable torch state_dict ({first})") from None
    sd = _unwrap(obj)
    if not isinstance(sd, dict) or not all(isinstance(k, str) for k in sd):
        raise UsageError(f"{path}: holds a {type(sd).__name__}, not a state_dict")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    keys = set(sd)
    missing, extra = (BODY_KEYS | HEAD_KEYS) - keys, keys - BODY_KEYS - HEAD_KEYS
    if missing or extra:
        detail = (f"missing {sorted(missing)[0]}" if missing else f"unexpected {sorted(extra)[0]}")
        n = len(missing) + len(extra)
        raise UsageError(f"{path}: not a vgg16 with the frameqc head ({detail}"
                         f"{f' and {n - 1} more key differences' if n > 1 else ''})")
    w1, w2 = sd["classifier.6.0.weight"], sd["classifier.6.3.weight"]
    if w1.ndim != 2 or w2.ndim != 2 or w1.shape[1] != 4096 or w2.shape[1] != w1.shape[0]:
        raise UsageError(f"{path}: head shapes {tuple(w1.shape)} and {tuple(w2.shape)} do not "
                         "form Linear(4096, h) -> Linear(h, n)")
    return Weights(sd, hidden=w1.shape[0], n_classes=w2.shape[0],
                   sha256=hashlib.sha256(data).hexdigest(), name=path.name)
