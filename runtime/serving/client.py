"""The light side of ``frameqc classify``: ask a running ``frameqc serve`` to do the work.

A server is used only when it serves the model this command would load, so an explicit
``--model`` naming another model (or a model file replaced since the server started)
is run locally instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model import ENGINE_ENV
from frameqc.runtime.serving.protocol import (
    MAX_LINE,
    default_socket,
    file_identity,
    peer_uid,
    send,
    trusted_uid,
)

CONNECT_TIMEOUT = 2.0
REPLY_TIMEOUT = 300.0


class ServerGone(Exception):
    """The server stopped answering part-way; the caller finishes the work itself."""


class Untrusted(Exception):
    """The socket is served by another user's process: nothing is sent to it."""

    def __init__(self, uid: int) -> None:
        super().__init__(f"served by uid {uid}, not by this user or root")
        self.uid = uid


class TurnedAway(Exception):
    """The server answered the greeting with an error line (``busy``: too many clients)."""


class Connection:
    """One conversation with a server: its status, then classify requests."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(CONNECT_TIMEOUT)
        try:
            self.sock.connect(os.fspath(path))
            uid = peer_uid(self.sock)  # before a byte is sent: frame paths are not for others
            if not trusted_uid(uid):
                raise Untrusted(uid)
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(REPLY_TIMEOUT)
        self.reader = self.sock.makefile("rb")
        try:
            # a busy server has said so and hung up: its line is still there to be read
            with contextlib.suppress(OSError):
                send(self.sock, {"op": "status"})
            self.status = self.reply()
        except BaseException:
            self.close()
            raise
        if "error" in self.status:
            self.close()
            raise TurnedAway(self.status["error"])

    def request(self, message: dict) -> dict:
        send(self.sock, message)
        return self.reply()

    def reply(self) -> dict:
        line = self.reader.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise ConnectionError("server closed the connection")
        return json.loads(line)

    def classify(self, paths: list[str], binning: str | None,
                 threshold: float | None) -> Iterator[dict]:
        """Reply lines ``{"record", "timings"}`` in order; ServerGone if it stops early."""
        try:
            send(self.sock, {"op": "classify", "paths": paths, "bin": binning,
                             "threshold": threshold})
            for _ in paths:
                reply = self.reply()
                if "error" in reply:
                    raise UsageError(f"server: {reply['error']}")
                yield reply
            self.reply()  # {"end": true}
        except (OSError, ValueError) as exc:
            raise ServerGone(str(exc)) from None

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def connect(socket_path: str | None, model: str | None) -> Connection | None:
    """A connection to a server that serves ``model`` (or any model, when None), on the
    engine ``$FRAMEQC_ENGINE`` pins (``--engine``), if any.

    With ``socket_path`` given, a server must answer and serve that model (UsageError
    otherwise); without it, the default socket is tried and None means "run locally".
    """
    insist = socket_path is not None
    path = socket_path if insist else default_socket()
    try:
        conn = Connection(path)
    except Untrusted as exc:
        if insist:
            raise UsageError(f"refusing the server on {path}: {exc}; nothing was sent to it"
                             ) from None
        print(f"frameqc: ignoring {path}: {exc}; classifying here", file=sys.stderr)
        return None
    except TurnedAway as exc:
        if insist:
            raise UsageError(f"the server on {path} says: {exc}") from None
        print(f"frameqc: the server on {path} says: {exc}; classifying here", file=sys.stderr)
        return None
    except (OSError, ValueError) as exc:
        if insist:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise UsageError(f"no frameqc server answers on {path} ({reason})") from None
        return None
    if model is not None and file_identity(model) != conn.status.get("model"):
        conn.close()
        if insist:
            raise UsageError(f"the server on {path} serves {conn.status['model']['path']}, "
                             f"not {os.path.realpath(model)}")
        return None
    pinned = os.environ.get(ENGINE_ENV) or "auto"
    if model is not None and pinned != "auto" and conn.status.get("engine",
                                                                   "onnxruntime") != pinned:
        conn.close()  # its digits would be another engine's than the one asked for
        if insist:
            raise UsageError(f"the server on {path} runs {conn.status.get('engine')}, not "
                             f"the {pinned} engine asked for")
        return None
    return conn
