"""``frameqc serve`` hardened (issue 17): stop signals at start, separate client limits,
reloading the model, the socket left to its owner, --allow checked on what was opened,
and the same record whichever process decided a frame."""

import csv
import io
import json
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import LABELS, frameqc, run_cli
from serving import Server, frame_payload, png_bytes, upstream


def unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.settimeout(60)
    return s


# -- a stop signal is never lost ------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sent_as_soon_as_it_answers_stops_it(runtime_model, tmp_path, sig):
    """The signal goes the moment the socket accepts (SIGINT ignored at start, as under a
    non-interactive shell's '&'); lost 8 times of 8 when the main thread sat in an untimed
    Event.wait()."""
    for i in range(3):
        sock = tmp_path / f"{i}.sock"
        with Server(runtime_model["int8"], sock,
                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) as server:
            assert server.stop(sig) == 0
            assert not sock.exists() and "stopped after" in server.log.read_text()


# -- the environment is checked at start ----------------------------------------------------

def test_a_bad_pixel_limit_is_refused_at_start(runtime_model, tmp_path):
    proc = frameqc("serve", "--model", str(runtime_model["int8"]), "--socket",
                   str(tmp_path / "p.sock"), "--tcp", "127.0.0.1:0",
                   env={"FRAMEQC_MAX_PIXELS": "lots"}, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "$FRAMEQC_MAX_PIXELS must be a whole number" in proc.stderr
    assert not (tmp_path / "p.sock").exists()


# -- the socket path is removed only while it is ours ---------------------------------------

def test_shutdown_leaves_a_newer_servers_socket(runtime_model, tmp_path):
    sock = tmp_path / "shared.sock"
    with Server(runtime_model["int8"], sock) as first:
        sock.unlink()  # removed by hand, and a second server bound there
        with Server(runtime_model["int8"], sock) as second:
            assert first.stop() == 0
            assert sock.exists(), "the first server removed the second one's socket"
            assert second.status()["pid"] == second.proc.pid
            assert second.stop() == 0
    assert not sock.exists()


# -- local and TCP clients have limits of their own -----------------------------------------

def test_tcp_load_never_locks_out_local_clients(runtime_model, tmp_path, fits_dir):
    from frameqc.runtime.serving.listeners import LOCAL_CLIENTS, TCP_CLIENTS

    frame = str(fits_dir / "prebinned_227.fits")
    with Server(runtime_model["int8"], tmp_path / "l.sock", "--tcp", "127.0.0.1:0",
                "--timeout", "120") as server:
        idle = [socket.create_connection(("127.0.0.1", server.tcp_port))
                for _ in range(TCP_CLIENTS)]
        try:
            time.sleep(0.5)  # every one accepted and holding its slot
            assert upstream(server.tcp_port, frame_payload(png_bytes(1))) == b"ERROR busy"
            code, _, err = run_cli("status", "--socket", str(server.sock))
            assert code == 0, err  # the Docker HEALTHCHECK answers under TCP load
            assert run_cli("classify", "--socket", str(server.sock), frame)[0] == 0
        finally:
            for s in idle:
                s.close()
        idle = [unix(server.sock) for _ in range(LOCAL_CLIENTS)]
        try:
            time.sleep(0.5)
            code, _, err = run_cli("classify", "--socket", str(server.sock), frame)
            assert code == 2 and err.count("\n") == 1 and "busy" in err, err
            assert "Expecting value" not in err
            code, _, err = run_cli("status", "--socket", str(server.sock))
            assert code == 2 and err.count("\n") == 1 and "busy" in err
            reply = upstream(server.tcp_port, frame_payload(png_bytes(2)))
            assert reply.startswith(b"ERROR ") and b"busy" not in reply  # TCP still served
        finally:
            for s in idle:
                s.close()
        assert server.internal_errors() == []


# -- the model is reloaded without a restart ------------------------------------------------

def _served_path(server: Server) -> str:
    return server.status()["model"]["path"]


def test_a_new_model_is_served_without_a_restart(runtime_model, tmp_path, fits_dir):
    link = tmp_path / "model.onnx"
    link.symlink_to(runtime_model["int8"])
    frame = str(fits_dir / "prebinned_227.fits")
    answers, stop = [], threading.Event()

    def client() -> None:  # one request after another, across the switch
        while not stop.is_set():
            with unix(server.sock) as s:
                reader = s.makefile("rb")
                s.sendall(b'{"op": "status"}\n')
                reader.readline()
                s.sendall(json.dumps({"op": "classify", "paths": [frame]}).encode() + b"\n")
                answers.append(json.loads(reader.readline()))

    with Server(link, tmp_path / "r.sock", "--tcp", "127.0.0.1:0") as server:
        assert _served_path(server) == str(runtime_model["int8"])
        worker = threading.Thread(target=client)
        worker.start()
        try:
            time.sleep(1)
            tmp = tmp_path / "model.onnx.new"
            tmp.symlink_to(runtime_model["fp32"])
            tmp.replace(link)  # as an operator swaps a link: atomically
            deadline = time.monotonic() + 60
            while _served_path(server) != str(runtime_model["fp32"]):
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.5)
            time.sleep(1)
        finally:
            stop.set()
            worker.join(60)
        precisions = [a["record"].get("precision") for a in answers]
        assert all("error" not in a["record"] for a in answers), answers
        assert precisions[0] == "int8" and precisions[-1] == "fp32"
        assert precisions == sorted(precisions, key=lambda p: p == "fp32")  # one switch
        assert "now serving" in server.log.read_text()
        status = server.status()
        assert status["card"]["precision"] == "fp32" and status["reloads"] == 1
        # the light client now finds the server serving the model the link names
        code, _, _ = run_cli("classify", "--socket", str(server.sock), "--model", str(link),
                             frame)
        assert code == 0
        server.proc.send_signal(signal.SIGHUP)  # docker kill --signal HUP
        deadline = time.monotonic() + 60
        while server.status()["reloads"] < 2:
            assert time.monotonic() < deadline and server.proc.poll() is None
            time.sleep(0.5)
        assert upstream(server.tcp_port, frame_payload(png_bytes(3))).startswith(b"ERROR ")
        (tmp_path / "broken.onnx").write_bytes(b"not a model")
        tmp.symlink_to(tmp_path / "broken.onnx")
        tmp.replace(link)
        deadline = time.monotonic() + 30
        while "cannot load" not in server.log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert _served_path(server) == str(runtime_model["fp32"])  # the old one stays
        assert server.stop() == 0
        assert server.internal_errors() == []


def test_the_identity_is_taken_before_loading(runtime_model, tmp_path, monkeypatch):
    """A file replaced while the model loads must not pass as the file loaded."""
    from frameqc.runtime.model.session import Model
    from frameqc.runtime.serving import process
    from frameqc.runtime.serving.protocol import file_identity

    link = tmp_path / "model.onnx"
    link.symlink_to(runtime_model["int8"])

    def slow_model(path, threads=None):
        model = Model(path, threads)
        tmp = tmp_path / "swap"
        tmp.symlink_to(runtime_model["fp32"])
        tmp.replace(link)  # replaced while it loaded
        return model

    monkeypatch.setattr(process, "Model", slow_model)
    served = process.load_served(link, threads=1)
    assert served.model.card.precision == "int8"
    assert served.identity == file_identity(runtime_model["int8"])
    assert served.identity != file_identity(link)  # the next look sees the change


# -- --allow is checked on what was opened --------------------------------------------------

def test_allow_checks_the_file_actually_opened(runtime_model, tmp_path, fits_dir, monkeypatch):
    """A client who can write in an allowed folder swaps a link in between the server's
    check and its open: the path looked inside when checked, the open followed the link
    out. Simulated deterministically: the path check sees the path as a plain file."""
    import io

    from frameqc.runtime.model.session import Model
    from frameqc.runtime.serving.server import ServerState

    allowed, outside = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    outside.mkdir()
    shutil.copy(fits_dir / "prebinned_227.fits", outside / "secret.fits")
    shutil.copy(fits_dir / "prebinned_227.fits", allowed / "ok.fits")
    (allowed / "swapped.fits").symlink_to(outside / "secret.fits")
    service = ServerState(Model(runtime_model["int8"], threads=1), None, 1 << 20, 10.0,
                          err=io.StringIO(), allow=(str(allowed),))
    monkeypatch.setattr(os.path, "realpath", os.path.abspath)  # the link, not yet there
    ok = service.classify(service.served.classifier, str(allowed / "ok.fits"), "ok")
    swapped = service.classify(service.served.classifier, str(allowed / "swapped.fits"), "s")
    assert ok.error is None and ok.decision is not None
    assert swapped.decision is None and "serve --allow" in swapped.error


# -- the same record whichever process decided it -------------------------------------------

@pytest.fixture(scope="module")
def spread_models(tmp_path_factory) -> dict:
    """fp32 and int8 models whose probabilities are far from 0.5, so the last digits of a
    probability show (runtime_model's sit near 0.5, where they hide)."""
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.onnx_export import quantize_int8
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    card = ModelCard(labels=LABELS, alerts=("Shutter",), weights_sha256="fedcba987654" * 5,
                     weights_name="random vgg16, spread head (tests)")
    params = random_params(len(LABELS), seed=3)
    params["classifier.6.3.weight"] *= np.float32(3000)
    out = tmp_path_factory.mktemp("spread") / "model.onnx"
    install_model(stage_model(build_graph(params, metadata=card.to_metadata()), out), out)
    frames = synthetic_tensors(AsinhRecipe(), 6)
    int8, _ = quantize_int8(out, card, frames[:4], frames[4:], min_agreement=0.0)
    return {"fp32": out, "int8": int8}


def _csv(out: str) -> list[dict]:
    rows = list(csv.DictReader(io.StringIO(out)))
    for r in rows:
        r.pop("seconds")
    return rows


def _records(out: str) -> list[dict]:
    rows = [json.loads(line) for line in out.splitlines()]
    for r in rows:
        r.pop("seconds", None)
    return rows


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_record_is_the_same_whichever_process_decides(spread_models, precision,
                                                           fits_dir, tmp_path, monkeypatch):
    """Served (one frame a request), local in batches of several, and local one frame at
    a time: identical records, digits and error texts included."""
    (tmp_path / "cut.fits").write_bytes((fits_dir / "full_good.fits").read_bytes()[:9000])
    (tmp_path / "junk.fits").write_bytes(b"not a frame at all" * 100)
    frames = [str(fits_dir / n) for n in (
        "full_good.fits", "full_shutter.fits", "full_wobble.fits", "prebinned_227.fits",
        "float32.fits", "gzipped.fits.gz", "nonsquare.fits", "int32.fits")]
    failures = [str(tmp_path / "nope.fits"), str(tmp_path / "cut.fits"),
                str(tmp_path / "junk.fits")]
    paths = frames[:4] + failures + frames[4:]  # batches mix frames and failures
    model = str(spread_models[precision])
    monkeypatch.setenv("FRAMEQC_SOCKET", str(tmp_path / "nobody.sock"))
    monkeypatch.delenv("FRAMEQC_PREPACK", raising=False)
    code, out, _ = run_cli("classify", "--model", model, "-f", "json", *paths)
    assert code == 1
    batched = _records(out)
    assert sum("error" in r for r in batched) == len(failures)
    decided = [r["probability"] for r in batched if "probability" in r]
    assert min(abs(p - 0.5) for p in decided) > 0.1, "near 0.5, last digits hide"
    one_by_one = []
    for p in paths[:2] + paths[4:5]:  # one-shots of one frame, a failure
        code, out, _ = run_cli("classify", "--model", model, "-f", "json", p)
        one_by_one += _records(out)
    assert one_by_one == batched[:2] + batched[4:5]
    with Server(spread_models[precision], tmp_path / "p.sock") as server:
        code, out, _ = run_cli("classify", "--socket", str(server.sock), "-f", "json", *paths)
        assert code == 1 and server.status()["frames"] == len(paths)
        assert _records(out) == batched
        code, out, _ = run_cli("classify", "--socket", str(server.sock), "-f", "csv",
                               paths[4], paths[0])
        code_here, out_here, _ = run_cli("classify", "--model", model, "-f", "csv",
                                         paths[4], paths[0])
        assert _csv(out) == _csv(out_here) and code == code_here == 1
        assert server.stop() == 0
