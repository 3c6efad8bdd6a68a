"""Hostile files, slow and foreign clients, unwritable outputs: one line, nothing lost.

Every test here needs no torch: the model is the session's torch-free vgg16.
"""

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from frameqc.runtime.data.synthetic import make_frame, write_fits
from frameqc.runtime.errors import FrameError, UsageError

from conftest import frameqc, run_cli
from serving import Server, frame_payload, upstream

NOBODY = 65534


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def gzip_bomb(side: int = 16384) -> bytes:
    """A ~2 MB .fits.gz whose header claims a side x side float64 image (2 GiB inflated)."""
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", -64), ("NAXIS", 2), ("NAXIS1", side),
                       ("NAXIS2", side)])
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts, chunk = [co.compress(hdr.tostring().encode())], b"\0" * (1 << 24)
    parts += [co.compress(chunk) for _ in range(side * side * 8 // len(chunk))]
    return b"".join([*parts, co.flush()])


def png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20000, 10000)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bombs")
    (d / "bomb.fits.gz").write_bytes(gzip_bomb())
    (d / "bomb.png").write_bytes(png_bomb())
    return {"gz": d / "bomb.fits.gz", "png": d / "bomb.png"}


@pytest.fixture()
def good(tmp_path, fits_dir) -> Path:
    shutil.copy(fits_dir / "full_good.fits", tmp_path / "a_good.fits")
    return tmp_path / "a_good.fits"


# -- hostile files ----------------------------------------------------------------------

def test_decompression_bomb_png_does_not_stop_the_folder(runtime_model, good, bombs):
    shutil.copy(bombs["png"], good.parent / "b_bomb.png")
    write_fits(good.parent / "c_good.fits", make_frame("shutter", 681, 4))
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), str(good.parent))
    assert proc.returncode == 1
    assert [line.split()[-1].rsplit("/", 1)[1] for line in proc.stdout.splitlines()] == [
        "a_good.fits", "c_good.fits"]
    assert one_line(proc.stderr) and "b_bomb.png: image over the limit" in proc.stderr


def test_gzip_bomb_is_refused_from_its_header(runtime_model, bombs):
    code = ("import resource, subprocess, sys, time; t = time.monotonic(); "
            "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "print(time.monotonic() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024); "
            "sys.stderr.write(p.stderr); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", code, sys.executable, "-m",
                           "frameqc.runtime.cli", "classify", "--model",
                           str(runtime_model["int8"]), str(bombs["gz"])],
                          capture_output=True, text=True, timeout=120)
    seconds, peak_mb = map(float, proc.stdout.split())
    assert proc.returncode == 1, proc.stderr
    assert "image of 16384x16384 pixels is over the limit of 33554432" in proc.stderr
    assert one_line(proc.stderr)
    assert peak_mb < 1000, f"inflated the bomb: {peak_mb} MB"  # 6.8 GB before
    print(f"gzip bomb refused in {seconds:.2f} s, peak {peak_mb:.0f} MB")


def test_pixel_limit_is_adjustable(good, runtime_model, monkeypatch):
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "1000000")
    code, _, err = run_cli("classify", "--model", str(runtime_model["int8"]), str(good))
    assert code == 1 and "image of 2048x2048 pixels is over the limit of 1000000" in err
    monkeypatch.setenv("FRAMEQC_MAX_PIXELS", "lots")
    code, _, err = run_cli("classify", "--model", str(runtime_model["int8"]), str(good))
    assert code == 2 and "$FRAMEQC_MAX_PIXELS must be a whole number" in err and one_line(err)


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])  # a folder lists its frames
def test_anything_but_a_regular_file_is_refused_without_hanging(runtime_model, good, tmp_path,
                                                                 kind):
    odd = tmp_path / f"odd_{kind}.fits"
    if kind == "fifo":
        os.mkfifo(odd)
    elif kind == "device":
        odd = Path("/dev/zero")
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(odd))
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), str(odd), str(good),
                   timeout=60)
    assert proc.returncode == 1 and good.name in proc.stdout
    assert one_line(proc.stderr) and "not a regular file" in proc.stderr


# -- unwritable outputs ------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--log", "--preview", "--sort-into"])
def test_unwritable_outputs_are_usage_errors_before_any_work(runtime_model, good, tmp_path,
                                                             option):
    blocker = tmp_path / "a_file"
    blocker.write_text("precious")  # as root nothing is unwritable: a file as the folder is
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), option,
                   str(blocker / "out"), str(good))
    assert proc.returncode == 2 and one_line(proc.stderr) and option in proc.stderr
    assert proc.stdout == "" and blocker.read_text() == "precious"


def test_log_failing_mid_run_keeps_every_decision(runtime_model, tmp_path, fits_dir,
                                                  monkeypatch):
    from frameqc.runtime.output import formats as output

    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "append_log", flaky)
    frames = [str(fits_dir / n) for n in ("full_good.fits", "full_shutter.fits",
                                          "prebinned_227.fits")]
    code, out, err = run_cli("classify", "--model", str(runtime_model["int8"]), "--log",
                             str(tmp_path / "log"), *frames)
    assert code == 1 and len(out.splitlines()) == 3
    assert err.strip() == ("frameqc: --log: cannot write (No space left on device); "
                           "classifying goes on")


def test_serve_with_an_unwritable_log(runtime_model, tmp_path, fits_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = frameqc("serve", "--model", str(runtime_model["int8"]), "--socket",
                   str(tmp_path / "s.sock"), "--log", str(blocker / "log"))
    assert proc.returncode == 2 and one_line(proc.stderr) and "--log" in proc.stderr
    logdir = tmp_path / "logs"
    logdir.mkdir()
    server = Server(runtime_model["int8"], tmp_path / "t.sock", "--log",
                    str(logdir / "serve.log"), "--tcp", "127.0.0.1:0")
    try:
        shutil.rmtree(logdir)
        logdir.write_text("")  # the log's folder is now a file: every append fails
        path = str(fits_dir / "full_good.fits")
        served = frameqc("classify", "--socket", str(server.sock), path)
        assert served.returncode == 0 and served.stdout.endswith(f" {path}\n")
        assert server.status()["frames"] == 1  # answered by the server, not a fallback
        reply = upstream(server.tcp_port, frame_payload(fits_dir.joinpath(
            "prebinned_227.fits").read_bytes()))
        assert reply.count(b" ") == 1 and not reply.startswith(b"ERROR")
        assert server.log.read_text().count("cannot write --log") == 1
    finally:
        server.stop()


# -- the server: slow, foreign and over-curious clients -----------------------------------

@pytest.fixture(scope="module")
def slow_server(runtime_model, tmp_path_factory, fits_dir):
    allowed = tmp_path_factory.mktemp("allowed")
    shutil.copy(fits_dir / "prebinned_227.fits", allowed / "ok.fits")
    server = Server(runtime_model["int8"], tmp_path_factory.mktemp("slow") / "s.sock",
                    "--tcp", "127.0.0.1:0", "--timeout", "2", "--allow", str(allowed),
                    env={"FRAMEQC_MAX_PIXELS": "4000000"})
    server.allowed = allowed
    yield server
    server.stop()


def drip(connect, payload: bytes, every: float = 0.5, limit: float = 30) -> float:
    """Send a byte every ``every`` s until the server hangs up; seconds it took."""
    t0 = time.monotonic()
    with connect() as s:
        s.settimeout(limit)
        try:
            for byte in payload:
                s.sendall(bytes([byte]))
                time.sleep(every)
                if time.monotonic() - t0 > limit:
                    break
            s.recv(100)
        except OSError:
            pass
    return time.monotonic() - t0


def test_timeout_bounds_the_whole_request(slow_server):
    tcp = drip(lambda: socket.create_connection(("127.0.0.1", slow_server.tcp_port)),
               frame_payload(b"x" * 100))
    unix = drip(lambda: _unix(slow_server.sock), b'{"op": "status"' + b" " * 100)
    print(f"--timeout 2: dripping TCP client dropped after {tcp:.1f} s, unix {unix:.1f} s")
    assert tcp < 2 * 2 + 1 and unix < 2 * 2 + 1
    assert slow_server.status()["pid"] == slow_server.proc.pid


def _unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    return s


def test_allow_limits_what_local_clients_may_open(slow_server, fits_dir, tmp_path):
    inside = slow_server.allowed / "ok.fits"
    escape = slow_server.allowed / "escape.fits"
    escape.symlink_to(fits_dir / "full_good.fits")
    code, out, _ = run_cli("classify", "--socket", str(slow_server.sock), "-f", "json",
                             str(inside), str(escape), "/etc/passwd")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and "label" in rows[0]
    assert all("serve --allow" in r["error"] for r in rows[1:])


def test_server_bounds_what_it_inflates(slow_server, fits_dir):
    raw = fits_dir.joinpath("full_good.fits").read_bytes()  # 2048^2 > the 4 Mpx limit here
    reply = upstream(slow_server.tcp_port, frame_payload(gzip.compress(raw, 1)))
    assert reply.startswith(b"ERROR image of 2048x2048 pixels is over the limit of 4000000")
    reply = upstream(slow_server.tcp_port, frame_payload(png_bomb()))
    assert reply.startswith(b"ERROR image over the limit")


def test_gzipped_fits_is_read_over_tcp(runtime_model, tmp_path, fits_dir):
    server = Server(runtime_model["int8"], tmp_path / "g.sock", "--tcp", "127.0.0.1:0")
    try:
        raw = fits_dir.joinpath("prebinned_227.fits").read_bytes()
        plain = upstream(server.tcp_port, frame_payload(raw))
        zipped = upstream(server.tcp_port, frame_payload(gzip.compress(raw)))
        assert zipped == plain and not plain.startswith(b"ERROR")
    finally:
        server.stop()


def test_fifo_or_folder_sent_to_the_server_is_refused(slow_server):
    fifo = slow_server.allowed / "pipe.fits"
    os.mkfifo(fifo)
    folder = slow_server.allowed / "folder.fits"
    folder.mkdir()
    conn = _unix(slow_server.sock)
    conn.settimeout(60)
    conn.sendall(json.dumps({"op": "classify", "paths": [str(fifo), str(folder)]}).encode()
                 + b"\n")
    reader = conn.makefile("rb")
    errors = [json.loads(reader.readline())["record"]["error"] for _ in range(2)]
    conn.close()
    assert errors == ["is a FIFO, not a regular file", "is a directory, not a regular file"]


@pytest.mark.parametrize("argv,match", [
    (["serve", "--timeout", "0"], "--timeout: must be greater than 0"),
    (["serve", "--timeout", "-3"], "--timeout: must be greater than 0"),
    (["serve", "--timeout", "nan"], "--timeout: must be a finite number"),
    (["watch", "--interval", "0", "."], "--interval: must be greater than 0"),
    (["watch", "--settle", "-1", "."], "--settle: must be 0 or more"),
    (["classify", "--threshold", "1.5", "x.fits"], "--threshold: must be in (0, 1]"),
    (["serve", "--max-bytes", "0"], "--max-bytes: must be a whole number >= 1"),
    (["serve", "--tcp", "127.0.0.1:99999"], "--tcp wants HOST:PORT"),
    (["serve", "--allow", "/nonexistent"], "--allow /nonexistent: not a directory"),
])
def test_nonsense_options_are_one_line_usage_errors(argv, match, tmp_path, runtime_model):
    proc = frameqc(*argv, "--model", str(runtime_model["int8"]), env={
        "FRAMEQC_SOCKET": str(tmp_path / "s.sock")})
    assert proc.returncode == 2 and match in proc.stderr and one_line(proc.stderr)
    assert not (tmp_path / "s.sock").exists()  # refused before binding anything


def test_stale_socket_that_cannot_be_removed_is_one_line(tmp_path, monkeypatch):
    from frameqc.runtime.serving.server import claim_socket

    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()

    def refuse(self, *a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(UsageError, match=r"stale socket of uid \d+ that cannot be removed"):
        claim_socket(stale)


def test_default_socket_lives_in_a_private_folder(monkeypatch, tmp_path):
    from frameqc.runtime.serving.protocol import default_socket, private_dir

    monkeypatch.delenv("FRAMEQC_SOCKET", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    assert default_socket() == f"/tmp/frameqc-{os.getuid()}/frameqc.sock"
    mine = tmp_path / "mine"
    private_dir(mine)
    assert mine.stat().st_mode & 0o777 == 0o700
    private_dir(mine)  # ours already: fine
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    with pytest.raises(UsageError, match="not a private folder"):
        private_dir(open_dir)
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(UsageError, match="not a private folder"):
        private_dir(tmp_path / "link")


# -- another user's socket (needs root to be another user) --------------------------------

SQUATTER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open(sys.argv[2], "ab") as fh:
        fh.write(data)
    try:
        c.sendall(b'{"version": "evil", "model": null, "card": {"labels": ["OK"]}}\\n')
    except OSError:
        pass
    c.close()
"""


@pytest.fixture()
def squatter():
    """A process of another user listening where our socket would be."""
    if os.getuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root, which this test needs to be another user")
        pytest.skip("needs root to run a process as another user")
    python = shutil.which("python3", path="/usr/bin:/bin")  # one 'nobody' may run
    shared = Path(tempfile.mkdtemp(prefix="frameqc-squat-", dir="/tmp"))
    shared.chmod(0o777)
    sock, heard = shared / "squat.sock", shared / "heard"
    heard.write_bytes(b"")
    heard.chmod(0o666)
    proc = subprocess.Popen([python, "-c", SQUATTER, str(sock), str(heard)],
                            user=NOBODY, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield sock, heard
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(shared, ignore_errors=True)


def test_client_sends_nothing_to_another_users_server(squatter, runtime_model, good):
    sock, heard = squatter
    proc = frameqc("classify", "--model", str(runtime_model["int8"]), str(good),
                   env={"FRAMEQC_SOCKET": str(sock)})
    assert proc.returncode == 0 and proc.stdout.endswith(f" {good}\n")  # classified here
    assert f"ignoring {sock}: served by uid {NOBODY}" in proc.stderr
    proc = frameqc("classify", "--socket", str(sock), str(good))
    assert proc.returncode == 2 and "refusing the server" in proc.stderr
    assert one_line(proc.stderr)
    time.sleep(0.5)
    assert heard.read_bytes() == b"", "the frame paths reached another user's process"


def test_serve_beside_a_squatted_socket_says_so(squatter, runtime_model):
    sock, _ = squatter
    proc = frameqc("serve", "--model", str(runtime_model["int8"]), "--socket", str(sock))
    assert proc.returncode == 2 and one_line(proc.stderr)
    assert f"held by another user's process (uid {NOBODY})" in proc.stderr


# -- watch ---------------------------------------------------------------------------------

class StubClassifier:
    """Stands in for the model: decides by file content, fails while told to."""

    class model:
        class card:
            model_id = "stub"
            precision = "fp32"

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.seen: list[str] = []

    def classify(self, path, name):
        from frameqc.runtime.engine.pipeline import Result
        from frameqc.runtime.model.decision import decide

        self.seen.append(Path(path).name)
        if Path(path).name in self.failing:
            return Result(name, error="cannot read: Input/output error")
        return Result(name, decision=decide([0.2, 0.8], ("Shutter", "OK")))


def test_watch_retries_a_passing_error_and_forgets_gone_frames(tmp_path):
    from frameqc.runtime.serving.watch import ATTEMPTS, Watcher

    incoming, state = tmp_path / "in", tmp_path / "state.jsonl"
    incoming.mkdir()
    for i in range(3):
        (incoming / f"f{i}.fits").write_bytes(b"x" * (i + 1))
    clf, emitted, err = StubClassifier(), [], io.StringIO()
    clf.failing.add("f1.fits")
    w = Watcher(clf, incoming, state, lambda rec, t: emitted.append(rec), settle=0,
                err=err, retry_after=0)
    w.scan()
    assert [r.get("error", "ok") for r in emitted] == ["ok", "cannot read: Input/output error",
                                                       "ok"]
    clf.failing.clear()  # the disk came back
    w.scan()
    assert "label" in emitted[-1] and emitted[-1]["path"].endswith("f1.fits")
    w.scan()
    assert len(emitted) == 4  # each frame decided once
    clf.failing.add("f2.fits")
    (incoming / "f2.fits").write_bytes(b"changed")  # a new version that keeps failing
    for _ in range(ATTEMPTS + 2):
        w.scan()
    assert clf.seen.count("f2.fits") == 1 + ATTEMPTS
    w.close()
    again = Watcher(clf, incoming, state, print, settle=0, err=err)  # a restart
    assert again.ready() == [] and len(again.done) == 3  # all remembered, the stale forgotten


def test_watch_state_stays_bounded_and_errors_do_not_kill_it(tmp_path):
    from frameqc.runtime.serving.watch import Watcher

    incoming, state = tmp_path / "in", tmp_path / "state.jsonl"
    incoming.mkdir()
    (incoming / "live.fits").write_bytes(b"x")
    with open(state, "w") as fh:  # years of frames long gone from the folder
        for i in range(5000):
            fh.write(json.dumps({"name": f"old{i}.fits", "size": 1, "mtime_ns": i}) + "\n")
    err = io.StringIO()
    w = Watcher(StubClassifier(), incoming, state, lambda rec, t: None, settle=0, err=err)
    w.scan()
    assert len(w.done) == 1 and len(state.read_text().splitlines()) == 1
    shutil.rmtree(incoming)  # the folder goes away (an unmounted disk)
    assert w.scan() == 0 and "cannot list" in err.getvalue()
    incoming.mkdir()
    (incoming / "back.fits").write_bytes(b"y")
    state.unlink()
    state.mkdir()  # and the state cannot be written
    assert w.scan() == 1 and "cannot write the state file" in err.getvalue()


# -- model files ---------------------------------------------------------------------------

def tiny_model(generation: int):
    """A graph whose output is its weights file's content: a mismatched pair shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from frameqc.runtime.model.card import ModelCard

    card = ModelCard(labels=("A", "B"), notes=str(generation))
    w = np.full((2, 4096), generation, np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["w"], ["probabilities"], axes=[1], keepdims=0)],
        "tiny", [], [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [2])],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in card.to_metadata().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    return model


def test_replacing_a_model_never_shows_a_mismatched_pair(tmp_path):
    import onnxruntime as ort

    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model

    target = tmp_path / "model.onnx"
    install_model(stage_model(tiny_model(0), target), target)
    done, seen, bad = threading.Event(), [], []

    def reader() -> None:
        while not done.is_set():
            try:
                sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
            except Exception:
                continue
            card = ModelCard.from_metadata(sess.get_modelmeta().custom_metadata_map)
            got = sess.run(None, {})[0][0]
            seen.append(got)
            if float(card.notes) != got:
                bad.append((card.notes, got))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for g in range(1, 40):
        install_model(stage_model(tiny_model(g), target), target)
    done.set()
    for t in threads:
        t.join()
    assert len(set(seen)) > 5 and not bad, bad[:3]
    assert len(list(tmp_path.glob("model.onnx.*.data"))) == 2  # this one and the previous


# -- model cards ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('labels = "OK"', "labels must be a list of names"),
    ('labels = ["A", "B"]\nthreshold = "0.6"', "threshold must be a number"),
    ('labels = ["A", "B"]\nthreshold = true', "threshold must be a number"),
    ('labels = ["A", "B"]\nalerts = "A"', "alerts must be a list of names"),
    ('labels = ["A", "B"]\nnotes = 3', "notes must be text"),
    ('labels = ["A", "B"]\nrecipe = "asinh"', "recipe must be a table with a name"),
])
def test_cards_are_checked_as_strictly_as_a_command_line(tmp_path, text, match):
    from frameqc.runtime.model.card import ModelCard

    path = tmp_path / "card.toml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError, match=match):
        ModelCard.from_toml(path)


def test_a_damaged_card_inside_a_model_is_one_line(runtime_model, tmp_path):
    import onnx

    model = onnx.load(str(runtime_model["int8"]), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "frameqc.threshold":
            prop.value = '"high"'
    onnx.save(model, str(runtime_model["int8"].parent / "damaged.onnx"))
    proc = frameqc("info", str(runtime_model["int8"].parent / "damaged.onnx"))
    assert proc.returncode == 2 and one_line(proc.stderr)
    assert "damaged model card: threshold must be a number" in proc.stderr


def test_frame_reader_refuses_each_bad_header_in_one_line():
    bad = fits.Header([("SIMPLE", True), ("BITPIX", 16), ("NAXIS", 2), ("NAXIS1", "wide")])
    with pytest.raises(FrameError, match="bad or missing NAXIS1"):
        from frameqc.runtime.data.reader import read_frame

        read_frame(bad.tostring().encode() + b"\0" * 2880)
