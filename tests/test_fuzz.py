"""Property-based fuzzing: random and mutated bytes into the frame reader and both protocols.

Every outcome is a frame or a one-line FrameError; the server answers each request with a
reply or a clean close, keeps answering, and its memory stays flat.
"""

import gzip
import io
import json
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
    out = [plain, gzip.compress(plain), packed]
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


def outcome(data: bytes) -> str:
    try:
        frame = read_frame(data)
    except FrameError as exc:
        text = str(exc)
        assert text and "\n" not in text
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
    assert reply == b"" or reply.startswith(b"ERROR ") or reply.count(b" ") == 1
    assert b"\n" not in reply.rstrip(b"\n")


@FUZZ
@given(st.one_of(
    st.binary(max_size=2000),
    st.lists(st.text(max_size=40), max_size=4).map(
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
    for line in reply.splitlines():
        msg = json.loads(line)
        assert isinstance(msg, dict)
        if "error" in msg:
            assert isinstance(msg["error"], str) and "\n" not in msg["error"]


def test_server_after_fuzzing_is_alive_and_flat(fuzz_server):
    status = fuzz_server.status()
    assert status["pid"] == fuzz_server.proc.pid and status["requests"] > 100
    grown_mb = (fuzz_server.rss_kb() - fuzz_server.start_rss) / 1024
    print(f"server RSS grew {grown_mb:.0f} MiB over {status['requests']} fuzzed requests")
    assert grown_mb < 100
    assert fuzz_server.internal_errors() == []
