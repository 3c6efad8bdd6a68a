"""The decision record: what frameqc says about one frame, defined once.

Every encoding is derived from :data:`FIELDS`: the JSON object (``--format json``, the
server's replies, the ``--log`` lines), the CSV header and rows, the Parquet schema and
rows of ``archive``, and the InfluxDB line protocol. Adding a field here adds
it to all of them. The upstream text line (:func:`text_line`) keeps its fixed form.

A frame that could not be decided has a record of ``path``, ``error``, ``model`` and
``precision`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    from frameqc.runtime.engine.pipeline import Result
    from frameqc.runtime.model.card import ModelCard


class Field(NamedTuple):
    """One field of the record: its name, kind, meaning, and where its value comes from.

    ``kind`` is ``str``, ``int``, ``float``, ``bool`` or ``probabilities`` (one
    probability per label: a ``{label: p}`` object in JSON, ``p_<label>`` columns in flat
    encodings). ``get`` takes the result and the model card; ``failed`` says whether a
    frame with no decision carries the field too.
    """

    name: str
    kind: str
    doc: str
    get: Callable[[Result, ModelCard], Any]
    failed: bool = False


def _decision(attr: str) -> Callable[[Result, ModelCard], Any]:
    return lambda r, card: getattr(r.decision, attr)


FIELDS: tuple[Field, ...] = (
    Field("path", "str", "the frame as named on the command line, in a list or a request",
          lambda r, card: r.path, failed=True),
    Field("label", "str", "the decided label (the card's rule, alert threshold included)",
          _decision("label")),
    Field("index", "int", "the decided label's output index in the model", _decision("index")),
    Field("probability", "float", "the decided label's probability", _decision("probability")),
    Field("probabilities", "probabilities", "every label's probability",
          lambda r, card: dict(r.decision.probabilities)),
    Field("doubtful", "bool", "the decision would change if the probabilities moved by the "
                              "card's margin", _decision("doubtful")),
    Field("date_obs", "str", "the frame's DATE-OBS, when its header has one",
          lambda r, card: r.date_obs),
    Field("night", "str", "the observing night: the UTC date of DATE-OBS - 12 h",
          lambda r, card: night_of(r.date_obs)),
    Field("model", "str", "the model's id (its source weights' sha256, 12 digits)",
          lambda r, card: card.model_id, failed=True),
    Field("precision", "str", "the model's arithmetic: fp32, int8 or bf16",
          lambda r, card: card.precision, failed=True),
    Field("engine", "str", "the engine that computed the probabilities: onnxruntime or "
                           "openvino (their last digits differ)", lambda r, card: r.engine),
    Field("seconds", "float", "seconds spent on this frame (read, bin, prepare, infer)",
          lambda r, card: round(r.seconds, 4)),
    Field("error", "str", "why the frame has no decision (such a record has only the "
                          "fields marked for failed frames)", lambda r, card: r.error,
          failed=True),
)


#: The years a DATE-OBS can name a night in. Outside them (``0001-01-01``, an unset clock;
#: ``9999-12-31``; a far future) the date is kept as text in ``date_obs``, the night is unknown.
YEARS = range(1900, 2200)


def observed(date_obs: object) -> datetime | None:
    """A DATE-OBS's time of observation, UTC (naive), or None: not text, a bare date (no
    time), unparsable, or a zone that takes it off the calendar.

    The one reading of DATE-OBS (the night, the page's clock, InfluxDB's timestamp). FITS
    writes UTC without a zone (``2025-07-08T22:15:00.123``); a zone, when given, is
    honoured; what follows the seconds that ISO 8601 does not know (``... UT``) is passed
    over. Any year: each caller judges its own range.
    """
    if not isinstance(date_obs, str) or "T" not in date_obs:
        return None
    from datetime import UTC, datetime  # here: a cold one-shot imports only what it uses

    text = date_obs.strip()
    for candidate in (text, text.split()[0], text[:19]):  # whole; without a suffix; seconds
        try:
            when = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        try:
            return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
        except OverflowError:  # 0001-01-01T00:30+01:00
            return None
    return None


def night_of(date_obs: str | None) -> str | None:
    """The observing night a DATE-OBS belongs to: the UTC date 12 hours earlier.

    A frame taken at 02:00 on 9 July belongs to the night of 8 July, like the one taken
    at 22:00 on 8 July. A bare date is its own night; anything unparsable, or a date
    outside :data:`YEARS`, gives None: a record, never an exception.
    """
    if not date_obs or not isinstance(date_obs, str):
        return None
    if "T" in date_obs:
        when = observed(date_obs)
        return None if when is None else night_at(when)
    from datetime import date

    try:
        night = date.fromisoformat(date_obs.strip()[:10])
    except ValueError:
        return None
    return night.isoformat() if night.year in YEARS else None


def night_at(when: datetime) -> str | None:
    """The observing night of a time of observation (:func:`observed`): the UTC date 12
    hours earlier, or None outside :data:`YEARS`."""
    from datetime import timedelta

    try:
        night = (when - timedelta(hours=12)).date()
    except OverflowError:  # year 1 minus 12 h is before the calendar
        return None
    return night.isoformat() if night.year in YEARS else None


def record(r: Result, card: ModelCard) -> dict[str, Any]:
    """A result as a record: a JSON-able dict of :data:`FIELDS`, in their order.

    Called in one place, :meth:`~frameqc.runtime.output.destinations.Destinations.send`,
    which sends the record on to every destination.

    A decided frame has every field but ``error``; a failed one the fields marked
    ``failed``.
    """
    if r.decision is None:
        return {f.name: f.get(r, card) for f in FIELDS if f.failed}
    return {f.name: f.get(r, card) for f in FIELDS if f.name != "error"}


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # never a bool


def _probabilities(value: Any) -> bool:
    return type(value) is dict and bool(value) and all(
        type(k) is str and _number(p) and 0 <= p <= 1 for k, p in value.items())


#: How a value of each kind of field is recognised (the types JSON and Parquet give).
_KINDS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: type(v) is str, "int": lambda v: type(v) is int,
    "float": _number, "bool": lambda v: type(v) is bool, "probabilities": _probabilities}
_CHECKS = {f.name: _KINDS[f.kind] for f in FIELDS}


def is_record(rec: Any) -> bool:
    """Whether ``rec`` (a decoded JSON line, a Parquet row) is a record of :data:`FIELDS`.

    Every field it has is of its kind (None stands for no value), ``path`` is there, and
    a decided frame has its ``label`` and ``probabilities``, a failed one its ``error``.
    Keys that are not fields (a log's ``time``, ``host``) are not looked at.
    """
    if type(rec) is not dict or type(rec.get("path")) is not str:
        return False
    for name, value in rec.items():
        check = _CHECKS.get(name)
        if check is not None and value is not None and not check(value):
            return False
    return rec.get("error") is not None or (
        rec.get("label") is not None and rec.get("probabilities") is not None)


def failed(rec: dict) -> bool:
    return "error" in rec


def columns(labels: Sequence[str]) -> list[str]:
    """The flat column names (CSV header, Parquet schema): ``p_<label>`` per label."""
    out = []
    for f in FIELDS:
        out += [f"p_{k}" for k in labels] if f.kind == "probabilities" else [f.name]
    return out


def flat(rec: dict, labels: Sequence[str]) -> dict[str, Any]:
    """A record as one flat row of :func:`columns` (None where a field has no value)."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        if f.kind == "probabilities":
            probs = rec.get(f.name) or {}
            out.update({f"p_{k}": probs.get(k) for k in labels})
        else:
            out[f.name] = rec.get(f.name)
    return out


def text_line(rec: dict) -> str:
    """The upstream classifier's line, as its ``print(int(index), numpy.round(float(p), 3),
    label, path)`` wrote it: ``1 0.998 OK /data/x.fits``, ``1 1.0 OK ...``, ``0 0.5 ...``.

    ``numpy.round`` of a float is ``rint(p * 1000) / 1000`` in float64, and numpy prints a
    float64 as Python does; ``round`` (half to even, as ``rint``) gives the same number
    without numpy on the light path.
    """
    p = round(float(rec["probability"]) * 1000.0) / 1000.0
    return f"{rec['index']} {p!r} {rec['label']} {rec['path']}"


def tcp_reply(rec: dict) -> str:
    """The upstream wobble server's TCP reply, or ``ERROR <why>``.

    Upstream answered ``decision + " " + str(numpy.round(p, 3))`` with ``p`` the float32
    probability of the most probable class, not of the decision: an alert label on top
    but under its threshold is answered ``OK`` with the alert's probability (``OK 0.552``).
    Existing clients parse these lines, so the text is upstream's; the record keeps the
    decided label's probability (docs/upstream.md).
    """
    if failed(rec):
        return f"ERROR {rec['error']}"
    import numpy as np

    top = np.float32(max(rec["probabilities"].values()))
    return f"{rec['label']} {np.round(top, 3)!s}"


def arrow_schema(labels: Sequence[str]):
    """The Parquet schema of :func:`flat` rows (pyarrow imported here only)."""
    import pyarrow as pa

    types = {"str": pa.string(), "int": pa.int16(), "float": pa.float64(),
             "bool": pa.bool_(), "probabilities": pa.float64()}
    kinds = {f"p_{k}": "probabilities" for k in labels} | {f.name: f.kind for f in FIELDS}
    return pa.schema([(name, types[kinds[name]]) for name in columns(labels)])
