"""The listening sockets of ``frameqc serve``: a bounded number of clients each.

Local and TCP clients have limits of their own, so TCP load never locks out the local
one-shots or the health check; a client over its limit is told "busy" in its own
protocol instead of queueing threads without bound.
"""

from __future__ import annotations

import contextlib
import json
import socketserver
import sys
import threading
from typing import Any

from frameqc.runtime.util.text import local_time

LOCAL_CLIENTS = 32  # local connections at once (cron one-shots, status, the health check)
TCP_CLIENTS = 32  # TCP connections at once: a limit of their own


class Limited:
    """Refuse connections beyond the server's limit instead of queueing threads without
    bound, with a busy reply in the server's own protocol."""

    service: Any  # the server's state: its counters and its stderr
    limit: int
    busy: bytes

    def limit_clients(self) -> None:
        self.slots = threading.BoundedSemaphore(self.limit)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                with contextlib.suppress(OSError):
                    request.setblocking(False)
                    request.sendall(self.busy)
                    while request.recv(1 << 16):  # what the client sent already: read, so
                        pass  # closing does not reset the connection before it reads this
            finally:
                self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:
        """A bug met by one request: one log line, the connection closed, the server on."""
        exc = sys.exc_info()[1]
        self.service.count(errors=1)
        self.service.err.write(f"{local_time()} internal error "
                               f"({type(exc).__name__}: {exc}); request dropped\n")


class LocalServer(Limited, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    limit = LOCAL_CLIENTS
    busy = (json.dumps({"error": f"busy: {LOCAL_CLIENTS} local clients connected already; "
                                 "try again"}) + "\n").encode()


class TCPServer(Limited, socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    limit = TCP_CLIENTS
    busy = b"ERROR busy"
