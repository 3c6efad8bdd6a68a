"""A model's card read straight from the file's protobuf: no onnx import, no session, no
weights read, wherever the card sits in the file.

Enough to choose session options (prepacking for int8) before the session is built.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from frameqc.runtime.errors import ModelError
from frameqc.runtime.model.card import ModelCard

#: The largest metadata entry read (a card is a few kilobytes); a larger one is not a card.
MAX_ENTRY = 1 << 20


def read_card(path: str | os.PathLike) -> ModelCard | None:
    """The card of a model file read straight from its bytes (no onnx, no session).

    A ``ModelProto``'s fields are walked at the top level only: the graph (field 7,
    with the weights inside when the model is one file) is passed over by its length,
    never read, and the metadata entries (field 14) are read wherever they are (protobuf
    writers put them after the graph). That is a few kilobytes whatever the model's
    size: enough to choose session options before the session is built. None when the
    file cannot be read this way; the session then reports what is wrong with it.
    """
    try:
        with open(path, "rb") as fh:
            meta = _metadata_props(fh, os.fstat(fh.fileno()).st_size)
        return ModelCard.from_metadata(meta)
    except (OSError, ValueError, IndexError, ModelError):
        return None


def _metadata_props(fh: BinaryIO, size: int) -> dict[str, str]:
    """``ModelProto.metadata_props`` (field 14: key 1, value 2) from a serialized model."""
    out = {}
    while fh.tell() < size:
        field, wire = divmod(_read_varint(fh), 8)
        if wire == 0:
            _read_varint(fh)
        elif wire in (1, 5):
            fh.seek(8 if wire == 1 else 4, os.SEEK_CUR)
        elif wire == 2:
            n = _read_varint(fh)
            if fh.tell() + n > size:
                raise ValueError("a field runs past the end of the file")
            if field != 14:
                fh.seek(n, os.SEEK_CUR)
                continue
            if n > MAX_ENTRY:
                raise ValueError("a metadata entry too large for a card")
            entry = dict(_fields(fh.read(n)))
            out[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
        else:
            raise ValueError(f"protobuf wire type {wire}")
    return out


def _read_varint(fh: BinaryIO) -> int:
    result = shift = 0
    while shift < 64:
        b = fh.read(1)
        if not b:
            raise ValueError("the file ends inside a field")
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    raise ValueError("a varint over 64 bits")


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
