"""A model's card read straight from the file's protobuf: no onnx import, no session.

Enough to choose session options (prepacking for int8) before the session is built.
"""

from __future__ import annotations

import os

from frameqc.runtime.errors import ModelError
from frameqc.runtime.model.card import ModelCard


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
