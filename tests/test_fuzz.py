"""Property-based fuzzing: random and mutated bytes into the frame reader and both protocols.

Every outcome is a frame or a one-line FrameError in frameqc's words (no library advice);
files of any layout (many HDUs, tables, gzip, bzip2, fpack) stay under the pixel limit;
path lists with NUL and undecodable bytes give one result per path; the server answers
each complete request (a silent close only for a request cut short), keeps answering,
and its memory stays flat.
"""

import bz2
import gzip
import io
import json
import os
import socket

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from frameqc.runtime.data.reader import Frame, read_frame
from frameqc.runtime.errors import FrameError

from serving import Server


def _seeds() -> list[bytes]:
    img = (np.arange(64 * 64) % 4000).reshape(64, 64).astype(np.uint16)
    buf = io.BytesIO()
    fits.PrimaryHDU(img).writeto(buf)
    plain = buf.getvalue()
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(img)]).writeto(buf)
    packed = buf.getvalue()
    buf = io.BytesIO()
    scaled = fits.ImageHDU(img.astype(np.float64) * 2 + 1)
    scaled.scale("int16", bscale=2.0, bzero=1.0)
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column("a", "J", array=np.arange(8))]), scaled]).writeto(buf)
    layered = buf.getvalue()
    out = [plain, gzip.compress(plain), packed, layered, gzip.compress(layered),
           bz2.compress(plain), bz2.compress(packed), gzip.compress(packed)]
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    """A valid file with bytes overwritten, a slice cut out, or its tail dropped."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, len(data)))
        del data[a:b]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):  # a header card with an absurd value
        at = data.find(b"NAXIS1  =")
        if at >= 0:
            data[at + 10: at + 30] = draw(st.sampled_from(
                [b"          2147483647", b"                  -5", b"                 1e9",
                 b"'abc'               "]))
    return bytes(data)


#: Advice a library gives its own callers, which must not reach frameqc's messages.
LIBRARY_ADVICE = ("verify(", "fix it", "ignore_missing", "try with", "consider", "<_io.",
                  " object at 0x")


def outcome(data: bytes) -> str:
    try:
        frame = read_frame(data)
    except FrameError as exc:
        text = str(exc)
        assert text and "\n" not in text
        assert not any(a in text.lower() for a in LIBRARY_ADVICE), text
        return "error"
    assert isinstance(frame, Frame) and frame.data.ndim in (2, 3)
    return "frame"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_are_a_frame_or_one_line(data):
    outcome(data)


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_mutated_frames_are_a_frame_or_one_line(data):
    outcome(data)


def test_the_seeds_themselves_read():
    assert [outcome(s) for s in SEEDS] == ["frame"] * len(SEEDS)


# -- layouts: any number and kind of HDUs, each claiming any size, packed any way ---------

LIMIT = 40_000  # $FRAMEQC_MAX_PIXELS here: 320 kB of data in all


def _card(key: str, value) -> bytes:
    text = f"{key:<8}= {value:>20}" if not isinstance(value, str) else f"{key:<8}= '{value}'"
    return text.ljust(80).encode()


@st.composite
def hdu(draw, first: bool) -> bytes:
    """One HDU's header (sizes claimed at will) and data (as much as claimed, or less)."""
    kind = "PRIMARY" if first else draw(st.sampled_from(["IMAGE", "BINTABLE", "TABLE"]))
    naxis = draw(st.lists(st.sampled_from([0, 1, 3, 150, 250, 2 ** 15]), max_size=3))
    bitpix = draw(st.sampled_from([8, 16, -32, -64]))
    cards = [_card("SIMPLE", "T") if first else _card("XTENSION", kind),
             _card("BITPIX", bitpix), _card("NAXIS", len(naxis))]
    cards += [_card(f"NAXIS{i}", n) for i, n in enumerate(naxis, 1)]
    if not first:
        cards += [_card("PCOUNT", 0), _card("GCOUNT", 1)]
    if draw(st.booleans()):  # ZIMAGE, whether or not it means anything here
        cards += [_card("ZIMAGE", "T"), _card("ZNAXIS", 2),
                  _card("ZNAXIS1", draw(st.sampled_from([10, 150, 300]))),
                  _card("ZNAXIS2", draw(st.sampled_from([10, 150, 300])))]
    cards += [_card("COMMENT", "x")] * draw(st.sampled_from([0, 40, 200]))
    header = b"".join(cards) + b"END".ljust(80)
    header += b" " * (-len(header) % 2880)
    claimed = abs(bitpix) // 8 * (int(np.prod(naxis)) if naxis else 0)
    present = min(claimed, draw(st.sampled_from([claimed, claimed // 2, 0])), 1 << 21)
    return header + b"\0" * (present + (-present % 2880))


@st.composite
def layout(draw) -> bytes:
    raw = b"".join([draw(hdu(True)), *draw(st.lists(hdu(False), max_size=70))])
    packing = draw(st.sampled_from(["plain", "gzip", "bzip2"]))
    return {"plain": raw, "gzip": gzip.compress(raw, 1), "bzip2": bz2.compress(raw, 1)}[packing]


@settings(max_examples=150, deadline=None)
@given(layout())
def test_any_layout_stays_under_the_pixel_limit(data):
    os.environ["FRAMEQC_MAX_PIXELS"] = str(LIMIT)
    try:
        if outcome(data) == "frame":
            assert read_frame(data).data.size <= LIMIT
    finally:
        del os.environ["FRAMEQC_MAX_PIXELS"]


# -- path lists with NUL bytes and bytes that are not UTF-8 --------------------------------

@pytest.fixture(scope="module")
def list_classifier(runtime_model, tmp_path_factory):
    from frameqc.runtime.data.synthetic import make_frame, write_fits
    from frameqc.runtime.engine.pipeline import Classifier

    d = tmp_path_factory.mktemp("fuzz-lists")
    write_fits(d / "good.fits", make_frame("good", 300, 1))
    (d / "text.fits").write_bytes(b"not a frame")
    return Classifier.load(runtime_model["fp32"]), d


LINE = st.one_of(
    st.binary(max_size=30),
    st.sampled_from([b"good.fits", b"text.fits", b"no\0such.fits", b"caf\xe9.fits",
                     b"\xff\xfe", b"#comment", b"", b"  ", b".", b"/"]),
    st.tuples(st.sampled_from([b"good", b"\0", b"\xc3", b"\xed\xa0\x80"]),
              st.binary(max_size=6)).map(b"".join))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=6))
def test_path_lists_with_nul_and_undecodable_bytes(list_classifier, lines):
    from frameqc.runtime.data.sources import expand, read_list

    classifier, d = list_classifier
    lines = [line.replace(b"\n", b"").replace(b"\r", b"") for line in lines]
    listing = d / "list.txt"
    listing.write_bytes(b"\n".join(os.fsencode(str(d)) + b"/" + line if line.startswith(
        (b"good", b"text", b"caf")) else line for line in lines) + b"\n")
    with open(listing, encoding="utf-8", errors="surrogateescape") as fh:
        wanted = list(read_list(fh))
    warned = []
    results = list(classifier.run(expand([f"@{listing}"], warn=warned.append), batch_size=4))
    assert [r.path for r in results] == wanted
    for r in results:
        assert (r.decision is None) != (r.error is None)
        assert r.error is None or (r.error and "\n" not in r.error), r.error
        if r.path.endswith("/good.fits"):
            assert r.decision is not None


@pytest.fixture(scope="module")
def fuzz_server(runtime_model, tmp_path_factory):
    server = Server(runtime_model["int8"], tmp_path_factory.mktemp("fuzz") / "f.sock",
                    "--tcp", "127.0.0.1:0", "--timeout", "5")
    server.start_rss = server.rss_kb()
    yield server
    server.stop()


def exchange(connect, payload: bytes) -> bytes:
    """Send, close our side, read everything until the server closes."""
    with connect() as s:
        s.settimeout(30)
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may hang up first, on an absurd length
            pass
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


FUZZ = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.one_of(st.binary(max_size=3000),
                 mutated().map(lambda d: len(d).to_bytes(8, "big") + d),
                 st.tuples(st.integers(0, 2**64 - 1), st.binary(max_size=64)).map(
                     lambda t: t[0].to_bytes(8, "big") + t[1])))
def test_tcp_protocol_survives_anything(fuzz_server, payload):
    reply = exchange(lambda: socket.create_connection(("127.0.0.1", fuzz_server.tcp_port)),
                     payload)
    size = int.from_bytes(payload[:8], "big")
    cut_short = len(payload) < 8 or (0 < size <= 64 << 20 and len(payload) - 8 < size)
    if cut_short:  # the server may only drop a request it never fully received
        assert reply == b"", reply
    else:
        assert reply.startswith(b"ERROR ") or reply.count(b" ") == 1, reply
    assert b"\n" not in reply.rstrip(b"\n")


@FUZZ
@given(st.one_of(
    st.binary(max_size=2000),
    st.lists(st.one_of(st.text(max_size=40), st.sampled_from(
        ["a\0b.fits", "\ud800.fits", "x/\udcff", "tmp", ""])), max_size=4).map(
        lambda ps: json.dumps({"op": "classify", "paths": ["/" + p for p in ps]}).encode()
        + b"\n"),
    st.dictionaries(st.sampled_from(["op", "paths", "bin", "threshold"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=10),
                              st.lists(st.integers(), max_size=3))).map(
        lambda d: json.dumps(d).encode() + b"\n")))
def test_local_protocol_survives_anything(fuzz_server, payload):
    def connect():
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(fuzz_server.sock))
        return s

    reply = exchange(connect, payload)
    answers = []
    for line in reply.splitlines():
        msg = json.loads(line)
        assert isinstance(msg, dict)
        if "error" in msg:
            assert isinstance(msg["error"], str) and "\n" not in msg["error"]
        if "record" not in msg:
            answers.append(msg)
    # every complete request line is answered (a record per path, then its end, or an
    # error); a silent close is only for a line cut short
    assert len(answers) == payload.count(b"\n"), (payload, reply)
    request = _json_or_none(payload)
    if isinstance(request, dict) and request.get("op") == "classify" and isinstance(
            request.get("paths"), list) and request["paths"] and all(
            isinstance(p, str) and p.startswith("/") for p in request["paths"]):
        records = [json.loads(line)["record"] for line in reply.splitlines()
                   if "record" in json.loads(line)]
        assert [r["path"] for r in records] == request["paths"], reply
        assert answers == [{"end": True}]


def _json_or_none(payload: bytes):
    """The request when the payload is one whole JSON line, as the server reads it."""
    if payload.count(b"\n") != 1 or not payload.endswith(b"\n"):
        return None
    try:
        return json.loads(payload)
    except ValueError:
        return None


def test_server_after_fuzzing_is_alive_and_flat(fuzz_server):
    status = fuzz_server.status()
    assert status["pid"] == fuzz_server.proc.pid and status["requests"] > 100
    grown_mb = (fuzz_server.rss_kb() - fuzz_server.start_rss) / 1024
    print(f"server RSS grew {grown_mb:.0f} MiB over {status['requests']} fuzzed requests")
    assert grown_mb < 100
    assert fuzz_server.internal_errors() == []
