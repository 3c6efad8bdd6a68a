"""``frameqc serve``: the model loaded once, answering on a unix socket and, if asked, TCP.

Hardened where the upstream server was not: a limit on announced sizes, one deadline
for each whole request (a client dripping bytes is dropped in time), concurrent clients
(a bounded number decoding at once, inference serialised by the model), no request can
stop the loop, clean shutdown on SIGTERM/SIGINT (a wake-up pipe: a signal cannot be
missed, whichever thread the kernel delivers it to), a stale socket replaced, another
user's socket never taken over, the socket created with mode 0660 and removed only while
it is still ours. Local and TCP clients have limits of their own, so TCP load never locks
out the local one-shots or the health check; a client over its limit is told "busy" in
its own protocol.

The model is reloaded without a restart on SIGHUP, and when the served path (a
``model.onnx`` link) comes to name another file: the new model is loaded beside the old
one and takes over between requests; a request keeps the model it started with.

Who may connect: the unix socket is 0660, so this user and the members of the socket's
group; each gets answers only for the frames it may read itself (its peer credentials,
:mod:`~frameqc.runtime.serving.access`), and ``--allow DIR`` can limit the frames to
some folders besides. TCP clients send image bytes, never paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from frameqc.runtime import __version__
from frameqc.runtime.data.reader import max_image_pixels, max_pixels
from frameqc.runtime.engine.pipeline import Classifier, Result
from frameqc.runtime.errors import FrameError, FrameQCError, UsageError
from frameqc.runtime.model.cpu import available_cpus
from frameqc.runtime.model.session import Model
from frameqc.runtime.output.destinations import Destinations, OnFailure, Sender
from frameqc.runtime.output.formats import check_appendable
from frameqc.runtime.output.record import tcp_reply
from frameqc.runtime.serving.access import Peer, open_for
from frameqc.runtime.serving.listeners import LocalServer, TCPServer
from frameqc.runtime.serving.process import (
    ServedModel,
    Signals,
    claim_socket,
    inode,
    load_served,
    parse_hostport,
    remove_if_ours,
)
from frameqc.runtime.serving.protocol import (
    DEFAULT_MAX_BYTES,
    DEFAULT_TIMEOUT,
    LENGTH_BYTES,
    LineReader,
    file_identity,
    prepare_socket_dir,
    recv_exact,
    send,
)
from frameqc.runtime.util.text import first_line, local_time, readable

CHECK_EVERY = 2.0  # seconds between two looks at the model file


#: An unwritable ``--log``: said at most once a minute, no frame counted as failed, and
#: the client still gets its answer.
ANSWERING_CLIENTS = OnFailure(False, 60.0, lambda option, where, why:
                              f"{local_time()} cannot write {option} {where} ({why}); "
                              "answering clients regardless\n")


class ServerState:
    """The resident model and the bookkeeping every handler shares."""

    def __init__(self, model: Model | ServedModel, log: str | None, max_bytes: int,
                 timeout: float, err: TextIO = sys.stderr, allow: tuple[str, ...] = (),
                 path: str | os.PathLike | None = None, senders: Sequence[Sender] = ()
                 ) -> None:
        self.senders = tuple(senders)  # --influx, --on-alert: each frame, and their health
        self.destinations = Destinations(None, log, err=err, on_failure=ANSWERING_CLIENTS,
                                         senders=self.senders)
        self.served = model if isinstance(model, ServedModel) else ServedModel(
            model, file_identity(model.path), Classifier(model))
        self.path = path or self.served.model.path  # what is watched for a new model
        self._tell_senders(say=False)  # the alert labels come from the card served
        self.allow = tuple(os.path.realpath(d) for d in allow)
        # frames decoded at once: each may take up to $FRAMEQC_MAX_PIXELS float64 pixels,
        # so memory is bounded by this, not by the number of clients
        self.decoding = threading.BoundedSemaphore(available_cpus())
        self.log, self.err = log, err
        self.max_bytes, self.timeout = max_bytes, timeout
        self.started = time.time()
        self.requests = self.frames = self.errors = self.reloads = 0
        self._lock = threading.Lock()
        self.endpoints: list[str] = []
        self._loading = threading.Lock()
        self._seen: dict | None = None  # a new identity, loaded once it holds still
        self._refused: dict | None = None  # a file that failed to load: not tried again

    def count(self, requests: int = 0, frames: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.frames += frames
            self.errors += errors

    def status(self) -> dict:
        served = self.served
        return {"version": __version__, "pid": os.getpid(), "model": served.identity,
                "model_id": served.card.model_id, "card": asdict(served.card),
                "engine": served.model.engine,
                "uptime": round(time.time() - self.started, 1),
                "requests": self.requests, "frames": self.frames, "errors": self.errors,
                "reloads": self.reloads, "endpoints": self.endpoints,
                "sinks": [getattr(s, "health", dict)() for s in self.senders]}

    def classify(self, classifier: Classifier, source: str | bytes, name: str,
                 peer: Peer | None = None) -> Result:
        """One frame, with at most as many frames decoding at once as there are CPUs.

        A path is opened here for a ``peer`` of another uid (only if it may read it, see
        :mod:`~frameqc.runtime.serving.access`) and under ``--allow``, and checked on the
        open descriptor: what is read is what was checked, whatever a client swaps in at
        the path meanwhile.
        """
        with self.decoding:
            if isinstance(source, str) and (self.allow or not (peer is None or peer.trusted)):
                try:
                    source = open_for(source, peer, within=self.allow)
                except FrameError as exc:
                    return Result(name, error=str(exc))
            return classifier.classify(source, name=name)

    @staticmethod
    def classifier_for(served: ServedModel, binning, threshold) -> Classifier:
        if binning is None and threshold is None:
            return served.classifier
        return Classifier(served.model, binning, threshold)  # it checks both, as the CLI does

    def look(self) -> None:
        """Reload when the served path names another file, once it has held still a look."""
        now = file_identity(self.path)
        if now is None or now == self.served.identity or now == self._refused:
            self._seen = None
            return
        if now == self._seen:  # the same new file two looks running: not being written
            self.reload("the model file changed")
        self._seen = now

    def reload(self, why: str) -> None:
        """Load the model at the served path beside the current one, in a thread of its own;
        requests go on with the current one until the new one is ready."""
        if not self._loading.acquire(blocking=False):
            return  # a reload is under way: it loads whatever the path names by then
        threading.Thread(target=self._reload, args=(why,), daemon=True).start()

    def _reload(self, why: str) -> None:
        try:
            old = self.served
            try:
                served = load_served(self.path, old.model.threads)
            except FrameQCError as exc:
                self._refused = file_identity(self.path)
                self._announce(f"{why}; cannot load {self.path} ({first_line(exc)}); still "
                          f"serving {old.model.path}")
                return
            self.served, self._refused, self._seen = served, None, None
            with self._lock:
                self.reloads += 1
            self._announce(f"{why}; now serving {served.model.path} "
                           f"({', '.join(served.card.labels)}; {served.card.precision} on "
                           f"{served.model.engine})")
            self._tell_senders(say=True)
        finally:
            self._loading.release()

    def _tell_senders(self, say: bool) -> None:
        """Hand the served card to the senders that act on it (the hook's alert labels)."""
        for sender in self.senders:
            if hasattr(sender, "new_card"):
                sender.new_card(self.served.card, say)

    def _announce(self, text: str) -> None:
        self.err.write(f"{local_time()} frameqc serve: {text}\n")
        self.err.flush()

    def note(self, client: str, result: Result, served: ServedModel) -> dict:
        """One frame decided for ``client``: its record to every destination (the ``--log``
        line, else a short line on stderr; the senders), and for the client's answer."""
        rec = self.destinations.send(result, served.card, client=client).record
        self.count(frames=1, errors="error" in rec)
        if not self.log:
            what = rec.get("error") or f"{rec['label']} {rec['probability']:.3f}"
            self.err.write(f"{local_time()} {client} {readable(rec['path'])}: "
                           f"{what} ({sum(result.timings.values()):.3f} s)\n")
            self.err.flush()
        return rec


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
        served = svc.served  # this request's model, whatever a reload does meanwhile
        classifier = svc.classifier_for(served, request.get("bin"), request.get("threshold"))
        peer = Peer.of(self.connection)  # who asks: it gets only frames it may read
        for path in paths:
            result = svc.classify(classifier, path, path, peer)
            rec = svc.note("unix", result, served)  # as a local run writes it, errors too
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
            served = svc.served
            result = svc.classify(served.classifier, data, f"<{size} bytes from {client}>")
            reply = tcp_reply(svc.note(client, result, served))
        except FrameQCError as exc:
            svc.count(errors=1)
            reply = f"ERROR {exc}"
        except (OSError, ConnectionError) as exc:  # timeout, reset, truncated body
            svc.count(errors=1)
            svc.err.write(f"{local_time()} {client}: dropped ({exc})\n")
            return
        with contextlib.suppress(OSError):
            sock.settimeout(svc.timeout)
            sock.sendall(reply.encode("ascii", "replace"))


def check_options(tcp: str | None, log: str | None) -> tuple[str, int] | None:
    """What can be refused before the model is loaded or a socket bound: the options and
    the environment a request would otherwise trip over."""
    max_pixels()
    max_image_pixels()
    if log:
        check_appendable(log, "--log")
    return parse_hostport(tcp) if tcp else None


def serve(model_path: str | os.PathLike, socket_path: Path, tcp: str | None = None,
          log: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
          timeout: float = DEFAULT_TIMEOUT, err: TextIO | None = None,
          allow: tuple[str, ...] = (), threads: int | None = None,
          senders: Sequence[Sender] = ()) -> int:
    """Serve until SIGTERM or SIGINT; the socket file is removed on the way out if ours.

    SIGHUP reloads the model; so does the served path naming another file.
    """
    import astropy.io.fits  # noqa: F401 -- imported here, once: a first import racing in
    import PIL.Image  # noqa: F401        two handler threads can fail half-initialised

    err = err or sys.stderr
    hostport = check_options(tcp, log)
    state = ServerState(load_served(model_path, threads), log, max_bytes, timeout, err, allow,
                        path=model_path, senders=senders)
    with Signals() as signals:  # before the socket exists: once a client can connect,
        servers, ours = _listen(state, socket_path, hostport)  # a signal must stop us
        for s in servers:
            s.limit_clients()
            threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                             daemon=True).start()
        model = state.served.model
        err.write(f"frameqc serve: {model.path} ({', '.join(model.card.labels)}; "
                  f"{model.card.precision} on {model.engine}) on "
                  f"{', '.join(state.endpoints)}; "
                  f"pid {os.getpid()}\n")
        err.flush()
        try:
            _until_stopped(state, signals)
        finally:
            for s in servers:
                s.shutdown()
                s.server_close()
            remove_if_ours(socket_path, ours)
            err.write(f"frameqc serve: stopped after {state.requests} requests\n")
    return 0


def _listen(state: ServerState, socket_path: Path, hostport: tuple[str, int] | None
            ) -> tuple[list[socketserver.BaseServer], tuple[int, int] | None]:
    """Bind the unix socket (born 0660) and, if asked, the TCP port; the servers and the
    socket file's inode (removed at the end only if it is still ours)."""
    prepare_socket_dir(socket_path)
    claim_socket(socket_path)
    old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider rights
    try:
        local = LocalServer(str(socket_path), LocalHandler)
    finally:
        os.umask(old_umask)
    ours = inode(socket_path)
    local.service = state
    servers: list[socketserver.BaseServer] = [local]
    state.endpoints.append(f"unix:{socket_path}")
    if hostport:
        host, port = hostport
        TCPServer.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            remote = TCPServer((host, port), UpstreamHandler)
        except OSError as exc:
            local.server_close()
            remove_if_ours(socket_path, ours)
            raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
        remote.service = state
        servers.append(remote)
        state.endpoints.append(f"tcp:{host}:{remote.server_address[1]}")
    return servers, ours


def _until_stopped(state: ServerState, signals: Signals) -> None:
    """Wait for SIGTERM/SIGINT; reload on SIGHUP, and look at the model file meanwhile."""
    while not signals.stop:
        came = signals.wait(CHECK_EVERY)
        if signals.stop:
            break
        if signal.SIGHUP in came:
            state.reload("SIGHUP")
        else:
            state.look()
