"""What the server and its clients agree on: where the socket is, how messages look.

The local (unix socket) protocol is JSON lines: a request line, then reply lines. The
TCP protocol is the upstream mirror-wobble server's, byte for byte: an 8-byte big-endian
length, the image bytes, and an ASCII ``<label> <probability:.3f>`` reply.

This module imports nothing heavy: ``frameqc classify`` talking to a server stays light.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

SOCKET_ENV = "FRAMEQC_SOCKET"
MAX_LINE = 1 << 20  # a request line (a JSON list of paths) longer than this is refused
LENGTH_BYTES = 8
DEFAULT_MAX_BYTES = 64 << 20  # largest image the TCP protocol accepts
DEFAULT_TIMEOUT = 30.0  # seconds a client may stay silent


def default_socket() -> Path:
    """``$FRAMEQC_SOCKET``, else ``$XDG_RUNTIME_DIR/frameqc.sock``, else /tmp/frameqc-UID.sock."""
    if os.environ.get(SOCKET_ENV):
        return Path(os.environ[SOCKET_ENV])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "frameqc.sock"
    return Path(f"/tmp/frameqc-{os.getuid()}.sock")


def file_identity(path: str | os.PathLike) -> dict | None:
    """What tells one model file from another cheaply: real path, size, mtime."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes, or ``ConnectionError`` if the peer closes first."""
    chunks, remaining = [], n
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {n - remaining} of {n} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
