"""The InfluxDB line protocol of a record: one more encoding, beside those of formats.

One decision is one point of measurement ``frameqc``. Its tags are the few-valued fields
(:data:`TAGS`: label, model, precision) and the operator's ``--influx-tag`` pairs; every
other field of :data:`~frameqc.runtime.output.record.FIELDS` is a field (``p_<label>``
per label), the path among them: a tag per frame would make one series per frame. The
timestamp is the frame's DATE-OBS (UTC) when it has a time, else the moment of encoding,
so a point sent twice (a spool resent after a write that half-succeeded) is the same
point, not a second one. Every text is written in the one form of
:func:`~frameqc.runtime.util.text.readable` (a byte of a file name that is not UTF-8 as
``\\xHH``, kept as those four characters by InfluxDB), so a line always encodes.

Used by ``--format influx`` and by the sender that delivers points without ever blocking
classification (:class:`frameqc.runtime.senders.influx.InfluxSender`).
"""

from __future__ import annotations

import math
import time
from datetime import datetime

from frameqc.runtime.errors import UsageError
from frameqc.runtime.output import record
from frameqc.runtime.util.text import readable

MEASUREMENT = "frameqc"
#: Record fields that are tags: a handful of values each (one series per combination).
TAGS = ("label", "model", "precision")


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


#: InfluxDB stores signed 64-bit nanoseconds; its own limits sit just inside them.
STAMP_LIMIT = 2**63 - 2


def timestamp_ns(date_obs: str | None, now_ns: int | None = None) -> int:
    """DATE-OBS as nanoseconds since the epoch (UTC when it names no zone), else now.

    A bare date is not a time of observation: such a frame, like one without DATE-OBS,
    is stamped with the moment of encoding, and so is one whose DATE-OBS InfluxDB cannot
    store (before 1677 or after 2262, such as the "unset" 0001-01-01); the point's
    ``date_obs`` field keeps the header's text either way.
    """
    when = record.observed(date_obs)
    if when is not None:
        delta = when - datetime(1970, 1, 1)
        ns = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        if -STAMP_LIMIT < ns < STAMP_LIMIT:
            return ns
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
