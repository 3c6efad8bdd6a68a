"""InfluxDB's write API: the URL and headers for ``--influx``, one request, and what an
answer of HTTP 400 says was not stored (InfluxDB 1.x names the lines it could not parse).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from frameqc.runtime.errors import UsageError

#: Environment variable holding an InfluxDB 2 token (``Authorization: Token ...``).
TOKEN_ENV = "FRAMEQC_INFLUX_TOKEN"
TIMEOUT = 5.0  # seconds per HTTP request


def write_url(url: str) -> tuple[str, dict[str, str]]:
    """The write endpoint and the headers for ``--influx URL``.

    InfluxDB 1.x: ``http://HOST:8086/write?db=DB`` (``rp``, ``u``, ``p`` as the server
    takes them). InfluxDB 2: ``http://HOST:8086/api/v2/write?org=ORG&bucket=BUCKET`` with
    the token in ``$FRAMEQC_INFLUX_TOKEN``. The precision is always nanoseconds.
    """
    import urllib.parse  # here, not at the top: --format influx and a one-shot stay light

    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--influx wants an http(s) URL such as "
                         f"http://sdb:8086/write?db=frameqc, not {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/api/v2/write"):
        if not query.get("bucket") or not query.get("org"):
            raise UsageError("--influx: an InfluxDB 2 URL needs ?org=ORG&bucket=BUCKET")
        if not os.environ.get(TOKEN_ENV):
            raise UsageError(f"--influx: an InfluxDB 2 URL needs the token in ${TOKEN_ENV}")
        headers["Authorization"] = f"Token {os.environ[TOKEN_ENV]}"
    elif path.endswith("/write"):
        if not query.get("db"):
            raise UsageError("--influx: an InfluxDB 1.x write URL needs ?db=DATABASE")
    else:
        raise UsageError(f"--influx: {url!r} is not a write URL: use "
                         "http://HOST:8086/write?db=DB (1.x) or "
                         "http://HOST:8086/api/v2/write?org=ORG&bucket=BUCKET (2.x)")
    query["precision"] = "ns"
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), headers


class Refused(Exception):
    """InfluxDB answered and did not store some points (bad data): resending them will not help.

    ``dropped`` is how many lines of the request it refused; ``again`` the indices of good
    lines it did not store only because a damaged line before them swallowed them (an
    unbalanced quote runs on to the end of the request): worth sending without it.
    """

    def __init__(self, reason: str, dropped: int, again: frozenset[int] = frozenset()) -> None:
        super().__init__(reason)
        self.dropped, self.again = dropped, again


class Down(Exception):
    """InfluxDB did not answer, or cannot take points now: worth trying again later."""


def post(url: str, headers: dict[str, str], lines: Sequence[str | bytes],
         timeout: float = TIMEOUT) -> None:
    """Send points in one request; :class:`Refused` or :class:`Down` when not all were stored."""
    import urllib.error
    import urllib.request

    body = b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        text = _body(exc)
        if exc.code == 400:  # a field of another type, a line it cannot parse
            raise refusal(text, lines) from None
        raise Down(f"HTTP {exc.code}: {_first(text) or exc.reason}") from None  # 401-404, 5xx
    except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS
        raise Down(str(getattr(exc, "reason", None) or exc) or type(exc).__name__) from None


def refusal(text: str, lines: Sequence[str | bytes]) -> Refused:
    """Which lines an HTTP 400 says were not stored.

    InfluxDB 1.x names each line it could not parse (``unable to parse 'LINE': why``;
    a line with an unbalanced quote takes the following lines with it), counts the points
    it refused otherwise (``dropped=N``, a field of another type), and says ``partial
    write`` when it stored the rest; InfluxDB 2 says ``(N written)``. Anything else is a
    refusal of the whole request.
    """
    try:
        answer = json.loads(text)
        message = str(answer.get("error") or answer.get("message") or text)
    except (ValueError, AttributeError):
        message = text
    shown = [ln.decode("utf-8", "replace") if isinstance(ln, bytes) else ln for ln in lines]
    heads: list[int] = []
    again: set[int] = set()
    why = ""
    for i, ln in enumerate(shown):
        if i in again:
            continue
        at = message.find(f"unable to parse '{ln}")
        end = at + len("unable to parse '") + len(ln)
        if at < 0 or message[end:end + 1] not in ("'", "\n"):
            continue
        heads.append(i)
        k = i + 1
        while k < len(shown) and message.startswith(f"\n{shown[k]}", end):
            again.add(k)
            end += 1 + len(shown[k])
            k += 1
        if not why:
            said = re.match(r"': (.*?)(?: dropped=\d+)?(?:\n|$)", message[end:])
            why = f"{said.group(1) if said else 'cannot parse'}: {ln[:80]}"
    counted = re.search(r"dropped=(\d+)", message)
    written = re.search(r"\((\d+) written\)", message)
    reason = why or _first(message.removeprefix("partial write: "))
    if heads:
        dropped = len(heads) + (int(counted.group(1)) if counted else 0)
    elif written:
        dropped = max(0, len(lines) - int(written.group(1)))
    elif "partial write" in message and counted:
        dropped = int(counted.group(1))
    else:
        dropped = len(lines)
    return Refused(f"HTTP 400: {reason}", min(dropped, len(lines)), frozenset(again))


def _body(exc: Exception) -> str:
    """What an HTTP error's body says."""
    try:
        return exc.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _first(text: str) -> str:
    """A message's first line, short, without InfluxDB's count of dropped points."""
    first = (text.strip().splitlines() or [""])[0]
    return re.sub(r" dropped=\d+$", "", first)[:200]
