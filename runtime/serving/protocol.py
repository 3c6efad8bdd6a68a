"""What the server and its clients agree on: where the socket is, how messages look.

The local (unix socket) protocol is JSON lines: a request line, then reply lines. The
TCP protocol is the upstream mirror-wobble server's, byte for byte: an 8-byte big-endian
length, the image bytes, and an ASCII ``<label> <probability:.3f>`` reply.

This module imports nothing heavy (not even pathlib): ``frameqc classify`` talking to a
server stays light.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

from frameqc.runtime.errors import UsageError

SOCKET_ENV = "FRAMEQC_SOCKET"
MAX_LINE = 1 << 20  # a request line (a JSON list of paths) longer than this is refused
LENGTH_BYTES = 8
DEFAULT_MAX_BYTES = 64 << 20  # largest image the TCP protocol accepts
DEFAULT_TIMEOUT = 30.0  # seconds a client may stay silent


def default_socket() -> str:
    """``$FRAMEQC_SOCKET``, else ``$XDG_RUNTIME_DIR/frameqc.sock``, else
    ``/tmp/frameqc-UID/frameqc.sock`` (a folder only its owner may enter: see
    :func:`private_dir`)."""
    if os.environ.get(SOCKET_ENV):
        return os.environ[SOCKET_ENV]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "frameqc.sock")
    return _tmp_socket()


def _tmp_socket() -> str:
    return f"/tmp/frameqc-{os.getuid()}/frameqc.sock"


def prepare_socket_dir(path: str | os.PathLike) -> None:
    """The socket's folder: private when it is the default under /tmp, else made as asked."""
    folder = os.path.dirname(os.fspath(path))
    if os.path.normpath(path) == _tmp_socket():
        private_dir(folder)
    else:
        try:
            os.makedirs(folder or ".", exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {folder} ({exc.strerror or exc})") from None


def private_dir(path: str | os.PathLike) -> None:
    """Make (or accept) ``path`` as a folder of this user's, mode 0700, for its socket.

    In a shared /tmp another user could create the folder first; one that is a link, is
    not ours, or lets others in is refused, never used.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise UsageError(f"cannot create {path} ({exc.strerror or exc})") from None
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.getuid() \
            or st.st_mode & 0o077:
        raise UsageError(f"{path} is not a private folder of this user's (owner uid "
                         f"{st.st_uid}, mode {st.st_mode & 0o777:o}); refusing to use it")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def trusted_uid(uid: int) -> bool:
    """A server we may send frame paths to: run by this user, or by root."""
    return uid in (os.getuid(), 0)


def file_identity(path: str | os.PathLike) -> dict | None:
    """What tells one model file from another cheaply: real path, inode, size, mtime."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return {"path": real, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def send(sock: socket.socket, message: dict) -> None:
    sock.sendall((json.dumps(message) + "\n").encode())


def recv_until(sock: socket.socket, deadline: float, size: int) -> bytes:
    """One ``recv`` of at most ``size`` bytes that gives up at ``deadline`` (monotonic).

    Timeouts bound a whole request, not each read: a client dripping a byte at a time
    is dropped when its deadline passes, however often it sends.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("client too slow")
    sock.settimeout(remaining)
    return sock.recv(size)


def recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes by ``deadline``; ``ConnectionError`` if the peer closes first."""
    chunks, remaining = [], n
    while remaining:
        chunk = recv_until(sock, deadline, min(remaining, 1 << 20))
        if not chunk:
            raise ConnectionError(f"connection closed after {n - remaining} of {n} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class LineReader:
    """JSON-lines requests read from a socket, each line by its own deadline."""

    def __init__(self, sock: socket.socket, limit: int = MAX_LINE) -> None:
        self.sock, self.limit, self.buf = sock, limit, bytearray()

    def readline(self, deadline: float) -> bytes:
        """The next line with its newline; ``b""`` at a clean end; ValueError if too long."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > self.limit:
                raise ValueError("request line too long")
            chunk = recv_until(self.sock, deadline, 1 << 16)
            if not chunk:
                if self.buf:
                    raise ConnectionError("connection closed inside a request line")
                return b""
            self.buf += chunk
