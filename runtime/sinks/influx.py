"""Decisions to InfluxDB: the line protocol of a record, and one write request.

One decision is one point of measurement ``frameqc``. Its tags are the few-valued fields
(:data:`TAGS`: label, model, precision) and the operator's ``--influx-tag`` pairs; every
other field of :data:`~frameqc.runtime.output.record.FIELDS` is a field (``p_<label>``
per label), the path among them: a tag per frame would make one series per frame. The
timestamp is the frame's DATE-OBS (UTC) when it has a time, else the moment of encoding,
so a point sent twice (a spool resent after a write that half-succeeded) is the same
point, not a second one. Every text is written in the one form of
:func:`~frameqc.runtime.util.text.readable` (a byte of a file name that is not UTF-8 as
``\\xHH``, kept as those four characters by InfluxDB), so a line always encodes.

The sender that delivers them without ever blocking classification is
:class:`frameqc.runtime.sinks.sender.InfluxSender`.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output import record
from frameqc.runtime.util.text import readable

MEASUREMENT = "frameqc"
#: Record fields that are tags: a handful of values each (one series per combination).
TAGS = ("label", "model", "precision")
#: Environment variable holding an InfluxDB 2 token (``Authorization: Token ...``).
TOKEN_ENV = "FRAMEQC_INFLUX_TOKEN"

TIMEOUT = 5.0  # seconds per HTTP request


# -- line protocol -------------------------------------------------------------------------

def _key(text: str) -> str:
    """A measurement, tag key, tag value or field key: commas, equals, spaces escaped."""
    text = " ".join(readable(str(text)).splitlines())
    return text.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def _value(value: object) -> str | None:
    """A field value in line protocol; None for what has none (None, NaN, infinities)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    text = " ".join(readable(str(value)).splitlines())
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def timestamp_ns(date_obs: str | None, now_ns: int | None = None) -> int:
    """DATE-OBS as nanoseconds since the epoch (UTC when it names no zone), else now.

    A bare date is not a time of observation: such a frame, like one without DATE-OBS,
    is stamped with the moment of encoding.
    """
    if date_obs and "T" in date_obs:
        try:
            when = datetime.fromisoformat(date_obs.strip())
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            delta = when - datetime(1970, 1, 1, tzinfo=UTC)
            return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    return time.time_ns() if now_ns is None else now_ns


def line(rec: dict, tags: dict[str, str] | None = None, now_ns: int | None = None) -> str:
    """One record as one line of InfluxDB line protocol (no newline).

    Derived from :data:`FIELDS`: a field added to the record is a field of the point.
    """
    tagset = {name: rec[name] for name in TAGS if rec.get(name) not in (None, "")}
    tagset.update(tags or {})
    fields: list[str] = []
    for f in record.FIELDS:
        if f.name in TAGS:
            continue
        if f.kind == "probabilities":
            values = [(f"p_{k}", p) for k, p in (rec.get(f.name) or {}).items()]
        else:
            values = [(f.name, rec.get(f.name))]
        for name, value in values:
            if f.kind in ("float", "probabilities") and value is not None:
                value = float(value)  # a field keeps one type: 1 is sent as 1.0, not 1i
            encoded = _value(value)
            if encoded is not None:
                fields.append(f"{_key(name)}={encoded}")
    head = ",".join([MEASUREMENT] + [f"{_key(k)}={_key(v)}" for k, v in sorted(tagset.items())])
    return f"{head} {','.join(fields)} {timestamp_ns(rec.get('date_obs'), now_ns)}"


def parse_tag(value: str) -> tuple[str, str]:
    """An ``--influx-tag K=V``: both parts non-empty, the key not a field of the record."""
    key, sep, val = value.partition("=")
    key, val = key.strip(), val.strip()
    if not sep or not key or not val:
        raise UsageError(f"--influx-tag wants KEY=VALUE, not {value!r}")
    if val.endswith("\\") or key.endswith("\\"):
        raise UsageError(f"--influx-tag {value!r}: a tag may not end with a backslash")
    if key in {f.name for f in record.FIELDS} or key.startswith("p_") or key == "time":
        raise UsageError(f"--influx-tag {key}: that name is a field of every point")
    return key, val


# -- where to send -------------------------------------------------------------------------

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
