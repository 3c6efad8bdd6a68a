"""``frameqc label``: a real server, a real browser (Debian chromium + chromedriver, Selenium).

Torch-free: the model is the runtime's own vgg16 graph (``runtime_model``). One browser
for the whole session; each server is a real ``frameqc label`` subprocess on a free port.
Set ``FRAMEQC_SCREENSHOTS=DIR`` to keep the page's screenshots (docs/img/ takes them).
"""

from __future__ import annotations

import csv
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import run_cli

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


# -- fixtures: frames, models, a browser, servers --------------------------------------------

@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> Path:
    """Eight IO:O-like FITS frames with the header facts a person reads, and a broken file."""
    d = tmp_path_factory.mktemp("label-frames")
    kinds = ["good", "shutter", "wobble", "good", "shutter", "good", "wobble", "good"]
    for k, kind in enumerate(kinds):
        write_fits(d / f"h_e_20250708_{k + 1}_1_1_1.fits", make_frame(kind, 1024, 40 + k),
                   OBJECT=["M13", "NGC 6543", "SA 110"][k % 3], EXPTIME=30.0 + 10 * k,
                   FILTER1="SDSS-R", **{"DATE-OBS": f"2025-07-0{8 + k // 4}T0{k}:14:0{k}.000"})
    (d / "h_e_20250708_9_1_1_1.fits").write_bytes(b"SIMPLE  =  garbage, cut short")
    return d


@pytest.fixture(scope="module")
def rgb_model(runtime_model) -> Path:
    """The same network with an ``rgb`` recipe card (the wobble models' JPEG/PNG input)."""
    import onnx

    src = Path(runtime_model["fp32"])
    proto = onnx.load(str(src), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == "frameqc.recipe":
            prop.value = json.dumps({"name": "rgb"})
    out = src.with_name("model-rgb.onnx")  # beside the weights file it names
    onnx.save(proto, str(out))
    return out


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("label-png")
    rng = np.random.default_rng(5)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), np.uint8)).save(d / f"w{k}.png")
    return d


@pytest.fixture(scope="session")
def browser():
    """One headless chromium for the session (the machine's network is closed)."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="frameqc-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1440,960"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    import shutil

    shutil.rmtree(profile, ignore_errors=True)


class LabelServer:
    """A ``frameqc label`` subprocess: its URL, token, and a way to stop or kill it."""

    def __init__(self, model: Path, sources: list[Path], output: Path, *extra: str) -> None:
        self.err = open(output.with_name(output.name + ".stderr"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "frameqc.runtime.cli", "label", "-m", str(model),
             *map(str, sources), "-o", str(output), "--port", "0", "--user", "tester",
             "--threads", "1", *extra],
            stdout=subprocess.PIPE, stderr=self.err, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.stop()
            raise AssertionError(f"no URL printed: {line!r}, {self.stderr()}")
        self.url = line
        self.base, self.token = line.split("/?token=")

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def state(self) -> dict:
        r = httpx.get(f"{self.base}/api/state", params={"token": self.token}, timeout=30)
        r.raise_for_status()
        return r.json()

    def wait_done(self, timeout: float = 180) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            state = self.state()
            if state["done"]:
                return state
            time.sleep(0.3)
        raise AssertionError(f"classification not done in {timeout} s: {self.stderr()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        self.proc.stdout.close()
        self.err.close()


@pytest.fixture()
def servers():
    """Start servers with ``servers(...)``; all are stopped when the test ends."""
    started = []

    def start(*args, **kwargs) -> LabelServer:
        started.append(LabelServer(*args, **kwargs))
        return started[-1]

    yield start
    for s in started:
        s.stop()


# -- the page ---------------------------------------------------------------------------

def _wait(driver, check, timeout: float = 30, what: str = "the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: check(d), f"waiting for {what}")


def _text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def _open(driver, server: LabelServer) -> None:
    driver.get(server.url)
    _wait(driver, lambda d: _shown(d), what="the first frame")


def _shown(driver) -> str:
    """The file name of the frame on the page."""
    return Path(_text(driver, "name")).name if _text(driver, "name") else ""


def _label(driver, key: str) -> str:
    """Press ``key`` on the frame shown; return its file name once the page says saved."""
    name = _shown(driver)
    saves = driver.execute_script("return document.getElementById('saved').textContent")
    _press(driver, key)
    _wait(driver, lambda d: (t := _text(d, "saved")).startswith("saved") and t != saves,
          what=f"'{key}' saved")
    return name


def _csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["path", "label"]
    return {p: label for p, label in rows[1:]}


def _journal(output: Path) -> list[dict]:
    return [json.loads(line) for line in
            output.with_name(output.name + ".journal.jsonl").read_text().splitlines()]


def _shot(driver, name: str) -> None:
    folder = os.environ.get("FRAMEQC_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_label_by_keys_undo_and_grid_corrections(browser, servers, runtime_model, frames,
                                                 tmp_path):
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    state = server.wait_done()
    assert state["counts"] == {"total": 9, "classified": 9, "errors": 1, "labelled": 0,
                               "excluded": 0}
    _open(browser, server)
    assert "OBJECT" in _text(browser, "facts") and "EXPTIME" in _text(browser, "facts")
    assert browser.execute_script(
        "return document.getElementById('net').naturalWidth") == 224

    first = _label(browser, "1")      # Shutter, by its digit
    second = _label(browser, "o")     # OK, by its initial
    third = _label(browser, "x")      # excluded
    assert len({first, second, third}) == 3
    _label(browser, "u")              # undo: the third is open again
    assert _shown(browser) == third
    _shot(browser, "label-frame.png")
    assert _csv(out) == {str(frames / first): "Shutter", str(frames / second): "OK"}
    journal = _journal(out)
    assert [(Path(j["path"]).name, j["label"], j["previous"]) for j in journal] == [
        (first, "Shutter", None), (second, "OK", None), (third, "(excluded)", None),
        (third, None, "(excluded)")]
    assert {j["user"] for j in journal} == {"tester"}
    assert all(j["model_label"] in ("Shutter", "OK") and 0 <= j["model_probability"] <= 1
               for j in journal)

    _press(browser, "g")              # the grid: the label with most open frames
    tabs = browser.find_elements("css selector", "#grid-tabs button")
    tab = max(tabs, key=lambda b: int(b.find_element("tag name", "small").text))
    called = tab.get_attribute("data-label")
    tab.click()
    other = "OK" if called == "Shutter" else "Shutter"
    thumbs = browser.find_elements("css selector", "#thumbs figure")
    page = [Path(t.get_attribute("title")).name for t in thumbs]
    assert len(page) >= 3
    thumbs[0].click()
    browser.find_elements("css selector", "#thumbs figure")[2].click()
    _wait(browser, lambda d: len(d.find_elements("css selector", "#thumbs .wrong")) == 2)
    _shot(browser, "label-grid.png")
    saves = _text(browser, "saved")
    _press(browser, "\ue007")         # Enter
    _wait(browser, lambda d: _text(d, "saved").startswith("saved") and _text(d, "saved")
          != saves, what="the grid page saved")
    labels = _csv(out)
    assert labels[str(frames / page[0])] == other and labels[str(frames / page[2])] == other
    assert all(labels[str(frames / name)] == called for k, name in enumerate(page)
               if k not in (0, 2))
    assert len(_journal(out)) == 4 + len(page)

    from frameqc.runtime.lifecycle.labelled import LabelledSet

    data = LabelledSet.load(out, ("Shutter", "OK"))
    assert len(data) == 2 + len(page)


def test_a_label_given_just_before_a_kill_is_kept(browser, servers, runtime_model, frames,
                                                  tmp_path):
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    _open(browser, server)
    name = _label(browser, "1")
    server.stop(signal.SIGKILL)       # the moment the page said saved
    assert _csv(out) == {str(frames / name): "Shutter"}

    t0 = time.monotonic()
    again = servers(runtime_model["fp32"], [frames], out)
    state = again.state()             # the cache: every frame classified at once
    assert state["done"] and state["counts"]["classified"] == 9, time.monotonic() - t0
    assert state["counts"]["labelled"] == 1
    _open(browser, again)
    assert _shown(browser) != name    # resumes on an open frame
    assert "1 labelled" in _text(browser, "counts")
    assert _csv(out) == {str(frames / name): "Shutter"}


def test_an_unreadable_frame_is_an_error_card_that_can_be_excluded(browser, servers,
                                                                   runtime_model, frames,
                                                                   tmp_path):
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out, "--order", "time")
    state = server.wait_done()
    broken = state["order"][-1]       # unreadable frames come last in every order
    assert state["frames"][str(broken)]["error"]
    _open(browser, server)
    for _ in range(len(state["order"]) - 1):
        _press(browser, "\ue014")     # right arrow, to the last frame
    _wait(browser, lambda d: "9_1_1_1" in _shown(d), what="the broken frame")
    assert browser.find_element("id", "error-card").is_displayed()
    _press(browser, "1")              # a label is refused on an unreadable frame...
    time.sleep(0.5)
    assert not out.exists()
    _label(browser, "x")              # ...excluding it is not
    assert _journal(out)[-1]["label"] == "(excluded)" and _csv(out) == {}
    assert "1 excluded" in _text(browser, "counts") and "1 unreadable" in _text(browser, "counts")


def test_rgb_models_label_png_frames(browser, servers, rgb_model, pngs, tmp_path):
    out = tmp_path / "wobble.csv"
    server = servers(rgb_model, [pngs], out, "--order", "random")
    state = server.wait_done()
    assert state["counts"]["errors"] == 0 and state["counts"]["classified"] == 4
    _open(browser, server)
    name = _label(browser, "2")
    assert _csv(out) == {str(pngs / name): "OK"}
    assert browser.execute_script("return document.getElementById('view').naturalWidth") == 224


# -- what the server must refuse ----------------------------------------------------------

def test_every_request_needs_the_token(servers, runtime_model, frames, tmp_path):
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    base = server.base
    assert server.base.startswith("http://127.0.0.1:")
    for path in ("/", "/api/state", "/img/1/net", "/static/label.js", "/nothing"):
        assert httpx.get(base + path).status_code == 403, path
        assert httpx.get(base + path, params={"token": "wrong"}).status_code == 403, path
    first = httpx.get(base + "/", params={"token": server.token})
    assert first.status_code == 200 and server.token in first.text
    cookies = dict(first.cookies)
    assert httpx.get(base + "/api/state", cookies=cookies).status_code == 200
    body = {"changes": [[1, "OK"]]}
    # the cookie alone cannot label: a POST from another site would carry it
    assert httpx.post(base + "/api/labels", json=body, cookies=cookies).status_code == 403
    assert httpx.post(base + "/api/labels", json=body,
                      params={"token": server.token}).status_code == 403
    assert not out.exists()
    ok = httpx.post(base + "/api/labels", json=body, headers={"X-FrameQC-Token": server.token})
    assert ok.status_code == 200 and len(_csv(out)) == 1


def test_no_file_outside_the_frames_can_be_fetched(servers, runtime_model, frames, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret bytes\n")
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    a_frame = sorted(frames.iterdir())[0]
    with httpx.Client(base_url=server.base, params={"token": server.token}) as client:
        for path in (f"/img/../../..{secret}", f"/static/..%2f..%2f..{secret}",
                     "/static/../../../../etc/passwd", f"/static/{secret}", "/static/",
                     "/static/labelling.py", f"/{a_frame}", "/img/99/net", "/img/-1/view",
                     "/img/1/../../labels.csv", f"/img/{secret}", "/api/frame",
                     f"/?path={secret}", "/img/1/journal", "/labels.csv"):
            r = client.get(path)
            assert b"secret bytes" not in r.content and b"root:" not in r.content, path
            assert not r.content.startswith(b"SIMPLE"), path
            assert r.status_code in (200, 404) and (r.status_code == 404 or path.startswith(
                "/?")), (path, r.status_code)
        bad = client.post("/api/labels", json={"changes": [[str(secret), "OK"]]},
                          headers={"X-FrameQC-Token": server.token})
        assert bad.status_code == 400


# -- the output is what evaluate and train read ----------------------------------------------

def test_labels_csv_is_what_evaluate_reads(runtime_model, frames, tmp_path):
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.web.labelling import EXCLUDED, Session

    clf = Classifier.load(runtime_model["fp32"], threads=1)
    card = clf.model.card
    paths = sorted(str(p) for p in frames.iterdir())
    out = tmp_path / "labels.csv"
    session = Session(paths, out, card.labels, card.alerts, clf.threshold, card.model_id,
                      card.precision, "tester")
    session.classify(clf)
    session.set_labels([(0, "Shutter"), (1, "OK"), (2, "OK"), (3, EXCLUDED), (4, "Shutter")])
    session.set_labels([(2, "Shutter")])  # relabelled: its history stays in the journal
    assert [j["label"] for j in _journal(out) if j["path"] == paths[2]] == ["OK", "Shutter"]
    code, stdout, stderr = run_cli("evaluate", "-m", str(runtime_model["fp32"]), str(out),
                                   "--format", "json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["n"] == 4 and report["failed"] == [], report
    assert report["counts"] == {"Shutter": 3, "OK": 1}


def test_uncertain_order_puts_doubtful_and_closest_first():
    from frameqc.runtime.web.labelling import distance

    def rec(p_shutter, doubtful):
        return {"probabilities": {"Shutter": p_shutter, "OK": 1 - p_shutter},
                "doubtful": doubtful}

    recs = [rec(0.9, False), rec(0.52, True), rec(0.3, False), rec(0.45, True)]
    key = [(not r["doubtful"], distance(r, ("Shutter", "OK"), ("Shutter",), 0.5))
           for r in recs]
    assert sorted(range(4), key=lambda i: key[i]) == [1, 3, 2, 0]


def test_the_listening_socket_lets_asyncio_turn_nagle_off():
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP: without it every
    keep-alive answer waited ~40 ms for a delayed ACK (bench/label_bench.py)."""
    import socket

    from frameqc.runtime.web.label_app import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
