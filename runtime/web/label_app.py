"""The web application of ``frameqc label`` (Starlette), and running it (uvicorn).

What it serves, all behind the session token (``?token=`` once, then a cookie):

- ``/``: the page (``static/label.html``, the token written into it for the POSTs);
- ``/static/label.js``, ``/static/label.css``: the page's code, from the package;
- ``/api/state?order=…[&since=VERSION]``: frames, order, labels and counts (JSON; with
  ``since``, only the version when nothing changed);
- ``/img/<index>/net`` and ``/img/<index>/view``: the cached pictures of frame ``index``;
- ``POST /api/labels``: ``{"changes": [[index, label, seen], …]}`` (``seen``: the label
  the page showed on the frame), answered once on disk; 409 with the labels now when a
  frame was labelled meanwhile by another page.

Nothing else: no path ever comes from a request (frames are indices into the session's
own list), no folder is listed. A POST must carry the token in an ``X-FrameQC-Token``
header, which a page of another site cannot read nor send, so no cross-site request
can label; the cookie is ``SameSite=Strict`` and ``HttpOnly`` besides. Cookies ignore
ports, so a page on another port of the host would send it: no page may frame this one
(``X-Frame-Options``, CSP ``frame-ancestors``), and it runs only its own scripts (CSP).
"""

from __future__ import annotations

import hmac
import json
import socket
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from frameqc.runtime.errors import UsageError
from frameqc.runtime.web.labelling import ORDERS, LabellingSession
from frameqc.runtime.web.labels import Conflict, NotSaved

STATIC = ("label.js", "label.css")
TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
#: The page's own scripts, styles, pictures and API, nothing else; framed by nobody.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
SECURITY = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", CSP))


def _static(name: str) -> str:
    return resources.files("frameqc.runtime.web").joinpath("static", name).read_text("utf-8")


class TokenGate:
    """403 for any request without the session token (query, cookie, or POST header).

    A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs a task per request).
    """

    def __init__(self, app: Any, token: str, cookie: str) -> None:
        self.app, self.token, self.cookie = app, token, cookie

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        by_query = self._ok(request.query_params.get("token"))
        by_cookie = self._ok(request.cookies.get(self.cookie))
        if scope["method"] == "POST":
            allowed = self._ok(request.headers.get("x-frameqc-token"))
        else:
            allowed = by_query or by_cookie

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY:
                    headers.append(name, value)
                if by_query and allowed:
                    headers.append("Set-Cookie", f"{self.cookie}={self.token}; HttpOnly; "
                                                 "SameSite=Strict; Path=/")
            await send(message)

        if not allowed:
            await Response(self._refusal(scope["method"], by_query or by_cookie), 403,
                           media_type="text/plain")(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _refusal(method: str, has_token: bool) -> str:
        """What a 403 says is missing."""
        if method == "POST" and has_token:
            return ("403 forbidden: a label is taken only with the session token in the "
                    "X-FrameQC-Token header (the page sends it); this request had the token "
                    "in its cookie or URL, not in that header\n")
        return "403 forbidden: open the URL with its ?token= that 'frameqc label' printed\n"


def make_app(session: LabellingSession, token: str, order: str, cookie: str) -> Starlette:
    """The application over one labelling session."""
    page = _static("label.html").replace("{{TOKEN}}", token).replace("{{ORDER}}", order)
    assets = {name: _static(name) for name in STATIC}

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            return Response("not found\n", 404, media_type="text/plain")
        return Response(assets[name], media_type=TYPES[name.rsplit(".", 1)[1]])

    def state(request: Request) -> Response:
        how = request.query_params.get("order", order)
        if how not in ORDERS:
            return JSONResponse({"error": f"unknown order {how!r}"}, 400)
        since = request.query_params.get("since", "")
        if since and not since.lstrip("-").isdigit():
            return JSONResponse({"error": "since must be a version number"}, 400)
        return JSONResponse(session.state(how, int(since) if since else None))

    def picture(request: Request) -> Response:
        kind = request.path_params["kind"]
        path = session.picture(request.path_params["index"], kind) if kind in (
            "net", "view") else None
        if path is None:
            return Response("not found\n", 404, media_type="text/plain")
        try:
            data = path.read_bytes()  # small (tens of kB): one read, no streaming
        except OSError:
            return Response("not found\n", 404, media_type="text/plain")
        return Response(data, media_type="image/png" if path.suffix == ".png"
                        else "image/jpeg")

    async def labels(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            changes = [(int(i), label, seen) for i, label, seen in body["changes"]]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "expected {\"changes\": [[index, label, label "
                                          "the page showed], ...]}"}, 400)
        from starlette.concurrency import run_in_threadpool

        try:
            return JSONResponse(await run_in_threadpool(
                session.set_labels, [c[:2] for c in changes], [c[2] for c in changes]))
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        except Conflict as exc:
            return JSONResponse({"error": str(exc), "given": exc.given}, 409)
        except NotSaved as exc:
            return JSONResponse({"error": str(exc)}, 507)

    routes = [Route("/", index), Route("/static/{name}", static),
              Route("/api/state", state), Route("/img/{index:int}/{kind}", picture),
              Route("/api/labels", labels, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(TokenGate, token=token,
                                                           cookie=cookie)])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the URL is printed (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP said, or asyncio leaves Nagle on for the connections (it sets TCP_NODELAY
    # only where sock.proto is TCP): each keep-alive answer would then wait ~40 ms for an ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                         "choose another --port") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def run_server(app: Starlette, sock: socket.socket) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's own handling), then close the socket and return.

    uvicorn raises the signal that stopped it again once it is done, to the handlers it
    found: these do nothing, so the command can still say what was saved.
    """
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off"))
    stops = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in before.items():
            signal.signal(sig, handler)
