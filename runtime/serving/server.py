"""``frameqc serve``: the model loaded once, answering on a unix socket and, if asked, TCP.

Hardened where the upstream server was not: a limit on announced sizes, one deadline
for each whole request (a client dripping bytes is dropped in time), concurrent clients
(a bounded number decoding at once, inference serialised by the model), no request can
stop the loop, clean shutdown on SIGTERM/SIGINT, a stale socket replaced, another
user's socket never taken over, and the socket created with mode 0660.

Who may connect: the unix socket is 0660, so this user and the members of the socket's
group; each can make the server read any file it can read, unless ``--allow DIR``
limits the frames to some folders. TCP clients send image bytes, never paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import numpy as np

from frameqc.runtime import __version__
from frameqc.runtime.engine.pipeline import Classifier, Result
from frameqc.runtime.errors import FrameError, FrameQCError, UsageError
from frameqc.runtime.model.cpu import available_cpus
from frameqc.runtime.model.session import Model
from frameqc.runtime.output.formats import append_log, check_appendable
from frameqc.runtime.output.record import record, tcp_reply
from frameqc.runtime.output.sink import Extra
from frameqc.runtime.serving.protocol import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    LENGTH_BYTES,
    LineReader,
    file_identity,
    peer_uid,
    prepare_socket_dir,
    recv_exact,
    send,
)
from frameqc.runtime.util.text import first_line, local_time

MAX_CLIENTS = 32
LOG_WARN_EVERY = 60.0  # seconds between two complaints about an unwritable --log


class Service:
    """The resident model and the bookkeeping every handler shares."""

    def __init__(self, model: Model, log: str | None, max_bytes: int, timeout: float,
                 err: TextIO = sys.stderr, allow: tuple[str, ...] = (),
                 extras: Sequence[Extra] = ()) -> None:
        self.model, self.card = model, model.card
        self.extras = tuple(extras)  # --influx, --on-alert: each frame, and their health
        self.allow = tuple(os.path.realpath(d) for d in allow)
        # frames decoded at once: each may take up to $FRAMEQC_MAX_PIXELS float64 pixels,
        # so memory is bounded by this, not by the number of clients
        self.decoding = threading.BoundedSemaphore(available_cpus())
        self.log_failed_at = -LOG_WARN_EVERY
        self.identity = file_identity(model.path)
        self.classifier = Classifier(model)
        self.log, self.err = log, err
        self.max_bytes, self.timeout = max_bytes, timeout
        self.started = time.time()
        self.requests = self.frames = self.errors = 0
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._lock = threading.Lock()
        self.endpoints: list[str] = []

    def count(self, requests: int = 0, frames: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.frames += frames
            self.errors += errors

    def status(self) -> dict:
        return {"version": __version__, "pid": os.getpid(), "model": self.identity,
                "model_id": self.card.model_id, "card": asdict(self.card),
                "uptime": round(time.time() - self.started, 1),
                "requests": self.requests, "frames": self.frames, "errors": self.errors,
                "endpoints": self.endpoints,
                "sinks": [getattr(e, "health", dict)() for e in self.extras]}

    def classify(self, classifier: Classifier, source: str | bytes, name: str) -> Result:
        """One frame, with at most as many frames decoding at once as there are CPUs."""
        if isinstance(source, str) and not self.allowed(source):
            return Result(name, error="not under a folder this server may read (serve --allow)")
        with self.decoding:
            return classifier.classify(source, name=name)

    def allowed(self, path: str) -> bool:
        if not self.allow:
            return True
        real = os.path.realpath(path)
        return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in self.allow)

    def classifier_for(self, binning, threshold) -> Classifier:
        if binning is None and threshold is None:
            return self.classifier
        return Classifier(self.model, binning, threshold)  # it checks both, as the CLI does

    def note(self, client: str, rec: dict, timings: dict[str, float]) -> None:
        """One log line per frame: to --log as JSON, else a short line on stderr."""
        self.count(frames=1, errors="error" in rec)
        for extra in self.extras:
            extra(rec, timings)
        if self.log:
            try:
                append_log(self.log, rec, timings, client=client)
            except OSError as exc:  # the client still gets its answer
                now = time.monotonic()
                if now - self.log_failed_at >= LOG_WARN_EVERY:
                    self.log_failed_at = now
                    self.err.write(f"{local_time()} cannot write "
                                   f"--log {self.log} ({exc.strerror or exc}); answering "
                                   "clients regardless\n")
                    self.err.flush()
        else:
            what = rec.get("error") or f"{rec['label']} {rec['probability']:.3f}"
            self.err.write(f"{local_time()} {client} {rec['path']}: "
                           f"{what} ({sum(timings.values()):.3f} s)\n")
            self.err.flush()


def _server_side(error: str) -> str:
    """Say so when the server, not the file, is the problem (another user, another mount)."""
    if error == "no such file" or error.startswith("cannot read"):
        return f"the server cannot read this file: {error}"
    return error


class LocalHandler(socketserver.StreamRequestHandler):
    """JSON lines: ``status``, or ``classify`` a list of absolute paths."""

    server: LocalServer

    def handle(self) -> None:
        svc = self.server.service
        reader = LineReader(self.connection)
        while True:
            try:  # each request, idle wait included, must arrive within --timeout
                line = reader.readline(time.monotonic() + svc.timeout)
            except ValueError:
                with contextlib.suppress(OSError):
                    self.reply({"error": "request line too long"})
                return
            except OSError:
                return
            if not line:
                return
            svc.count(requests=1)
            try:
                self.answer(json.loads(line))
            except (ValueError, TypeError, KeyError, FrameQCError) as exc:
                svc.count(errors=1)
                self.reply({"error": first_line(exc) if str(exc) else "bad request"})
            except OSError:
                return

    def answer(self, request: dict) -> None:
        svc = self.server.service
        if not isinstance(request, dict):
            raise UsageError("a request is a JSON object")
        op = request.get("op")
        if op == "status":
            self.reply(svc.status())
            return
        if op != "classify":
            raise UsageError(f"unknown op {op!r}")
        paths = request["paths"]
        if not isinstance(paths, list) or not all(isinstance(p, str) and os.path.isabs(p)
                                                  for p in paths):
            raise UsageError("paths must be a list of absolute paths")
        classifier = svc.classifier_for(request.get("bin"), request.get("threshold"))
        for path in paths:
            result = svc.classify(classifier, path, path)
            if result.error is not None:
                result.error = _server_side(result.error)
            rec = record(result, svc.card)
            svc.note("unix", rec, result.timings)
            self.reply({"record": rec, "timings": result.timings})
        self.reply({"end": True})

    def reply(self, message: dict) -> None:
        self.connection.settimeout(self.server.service.timeout)
        send(self.connection, message)


class UpstreamHandler(socketserver.BaseRequestHandler):
    """The mirror-wobble protocol: 8-byte big-endian length, image bytes -> ``label p``."""

    server: TCPServer

    def handle(self) -> None:
        svc = self.server.service
        sock: socket.socket = self.request
        client = f"tcp:{self.client_address[0]}"
        svc.count(requests=1)
        try:  # the whole request, length and image, within --timeout of the accept
            deadline = time.monotonic() + svc.timeout
            size = int.from_bytes(recv_exact(sock, LENGTH_BYTES, deadline), "big")
            if size == 0:
                raise FrameError("empty image")
            if size > svc.max_bytes:
                raise FrameError(f"image of {size} bytes is over the limit of {svc.max_bytes}")
            data = recv_exact(sock, size, deadline)
            result = svc.classify(svc.classifier, data, f"<{size} bytes from {client}>")
            rec = record(result, svc.card)
            svc.note(client, rec, result.timings)
            reply = tcp_reply(rec)
        except FrameError as exc:
            svc.count(errors=1)
            reply = f"ERROR {exc}"
        except (OSError, ConnectionError) as exc:  # timeout, reset, truncated body
            svc.count(errors=1)
            svc.err.write(f"{local_time()} {client}: dropped ({exc})\n")
            return
        with contextlib.suppress(OSError):
            sock.settimeout(svc.timeout)
            sock.sendall(reply.encode("ascii", "replace"))


class _Limited:
    """Refuse connections beyond MAX_CLIENTS instead of queueing threads without bound."""

    service: Service

    def process_request(self, request, client_address) -> None:
        if not self.service.slots.acquire(blocking=False):
            try:
                request.sendall(b"ERROR busy\n")
            finally:
                self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.service.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A bug met by one request: one log line, the connection closed, the server on."""
        exc = sys.exc_info()[1]
        self.service.count(errors=1)
        self.service.err.write(f"{local_time()} internal error "
                               f"({type(exc).__name__}: {exc}); request dropped\n")


class LocalServer(_Limited, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class TCPServer(_Limited, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def claim_socket(path: Path) -> None:
    """Make way for a new socket: remove a stale one, refuse a live one or a non-socket.

    A socket another user's process listens on (someone bound the path first) is named
    as such; a stale one that cannot be removed is a one-line error, not a traceback.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"{path} exists and is not a socket; not touching it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
        owner = peer_uid(probe)
    except OSError:
        try:
            path.unlink()  # nobody listens: left over from a server that died
        except OSError as exc:
            raise UsageError(f"{path} is a stale socket of uid {st.st_uid} that cannot be "
                             f"removed ({exc.strerror}); give --socket another path") from None
        return
    finally:
        probe.close()
    if owner != os.getuid():
        raise UsageError(f"{path} is held by another user's process (uid {owner}); not "
                         "serving there: give --socket another path")
    raise UsageError(f"a server is already listening on {path}")


def parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port
        raise UsageError(f"--tcp wants HOST:PORT or PORT, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_options(tcp: str | None, log: str | None) -> tuple[str, int] | None:
    """What can be refused before the model is loaded or a socket bound."""
    if log:
        check_appendable(log, "--log")
    return parse_hostport(tcp) if tcp else None


def serve(model: Model, socket_path: Path, tcp: str | None = None, log: str | None = None,
          max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_TIMEOUT,
          err: TextIO | None = None, allow: tuple[str, ...] = (),
          extras: Sequence[Extra] = ()) -> int:
    """Serve until SIGTERM or SIGINT; the socket file is removed on the way out."""
    import astropy.io.fits  # noqa: F401 -- imported here, once: a first import racing in
    import PIL.Image  # noqa: F401        two handler threads can fail half-initialised

    err = err or sys.stderr
    hostport = check_options(tcp, log)
    service = Service(model, log, max_bytes, timeout, err, allow, extras)
    size = model.card.input_size
    model.predict(np.zeros((1, 3, size, size), np.float32))  # warm up: the first run is slow
    # handlers before the socket exists: once a client can connect, a signal must stop us
    # (where SIGINT starts ignored, one sent before this would be lost, and we would hang)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    servers: list[socketserver.BaseServer] = []
    prepare_socket_dir(socket_path)
    claim_socket(socket_path)
    old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider rights
    try:
        local = LocalServer(str(socket_path), LocalHandler)
    finally:
        os.umask(old_umask)
    local.service = service
    servers.append(local)
    service.endpoints.append(f"unix:{socket_path}")
    if hostport:
        host, port = hostport
        TCPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            remote = TCPServer((host, port), UpstreamHandler)
        except OSError as exc:
            local.server_close()
            socket_path.unlink(missing_ok=True)
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        remote.service = service
        servers.append(remote)
        service.endpoints.append(f"tcp:{host}:{remote.server_address[1]}")
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    err.write(f"frameqc serve: {model.path} ({', '.join(model.card.labels)}; "
              f"{model.card.precision}) on {', '.join(service.endpoints)}; pid {os.getpid()}\n")
    err.flush()
    try:
        stop.wait()
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()
        socket_path.unlink(missing_ok=True)
        err.write(f"frameqc serve: stopped after {service.requests} requests\n")
    return 0
