"""``frameqc label``: a real server, a real browser (Debian chromium + chromedriver, Selenium).

Torch-free: the model is the runtime's own vgg16 graph (``runtime_model``). One browser
for the whole session; each server is a real ``frameqc label`` subprocess on a free port.
Set ``FRAMEQC_SCREENSHOTS=DIR`` to keep the page's screenshots (docs/img/ takes them).
"""

from __future__ import annotations

import csv
import json
import os
import re
import select
import shutil
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
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # CSP reports, for _console
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
        if not self.err.closed:
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

    def index(self, name: str) -> int:
        """The index of the frame whose file name is ``name`` (as the page shows it)."""
        frames = self.state()["frames"]
        return next(int(i) for i, f in frames.items() if Path(f["name"]).name == name)


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


def test_rows_frameqc_did_not_write_are_kept(browser, servers, runtime_model, frames,
                                            tmp_path):
    """Hand-made rows, and the labels of another folder labelled on the same -o, survive
    saves and restarts (issue 27 item 7); a stop says what was saved (issue 30 item 12)."""
    out = tmp_path / "labels.csv"
    mine = str(frames / "h_e_20250708_2_1_1_1.fits")
    out.write_text(f"path,label\n/archive/2024/o_1.fits,OK\nold/o_2.fits,Shutter\n{mine},OK\n")
    hand = {"/archive/2024/o_1.fits": "OK", "old/o_2.fits": "Shutter", mine: "OK"}
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    _open(browser, server)
    first = _label(browser, "1")
    expected = {**hand, str(frames / first): "Shutter"}
    assert _csv(out) == expected
    server.stop(signal.SIGINT)
    assert re.search(r"stopped; 1 change saved in this run .*labels\.csv holds 4 labels",
                     server.stderr()), server.stderr()

    again = servers(runtime_model["fp32"], [frames], out)  # a journal exists now
    _open(browser, again)
    second = _label(browser, "1")
    expected[str(frames / second)] = "Shutter"
    assert _csv(out) == expected
    again.stop()

    night2 = tmp_path / "night2"  # the next night, on the same -o
    night2.mkdir()
    for k in (3, 4):
        shutil.copy(frames / f"h_e_20250708_{k}_1_1_1.fits", night2 / f"h_e_20250709_{k}.fits")
    other = servers(runtime_model["fp32"], [night2], out)
    other.wait_done()
    _open(browser, other)
    third = _label(browser, "o")
    expected[str(night2 / third)] = "OK"
    assert _csv(out) == expected
    other.stop(signal.SIGTERM)
    assert re.search(r"stopped; 1 change saved in this run .*labels\.csv holds 6 labels",
                     other.stderr()), other.stderr()

    back = servers(runtime_model["fp32"], [frames], out)  # the first night again
    assert back.state()["counts"]["labelled"] == 3
    _open(browser, back)
    _label(browser, "x")  # a save: rewrites the CSV
    assert _csv(out) == expected


def test_a_failed_save_on_a_full_disk_loses_no_later_label(browser, servers, runtime_model,
                                                          frames, tmp_path):
    """The journal append that fails part-way leaves no torn line for the next one to be
    glued to (issue 27 item 8): a real file-size limit on the server, as a full disk."""
    import resource

    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    _open(browser, server)
    first = _label(browser, "1")
    journal = out.with_name(out.name + ".journal.jsonl")
    room = journal.stat().st_size + 40  # part of the next line fits: a short write, then EFBIG
    soft, hard = resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (room, hard))
    try:
        _press(browser, "1")
        _wait(browser, lambda d: _text(d, "saved").startswith("NOT saved"), what="the refusal")
        refusal = _text(browser, "saved")
    finally:
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    second = _label(browser, "1")  # there is room again
    server.stop()
    again = servers(runtime_model["fp32"], [frames], out)
    assert again.state()["counts"]["labelled"] == 2
    assert [(Path(j["path"]).name, j["label"]) for j in _journal(out)] == [
        (first, "Shutter"), (second, "Shutter")]
    assert _csv(out) == {str(frames / first): "Shutter", str(frames / second): "Shutter"}
    assert "File too large" in refusal, refusal  # the server's reason, on the page


def test_two_tabs_on_one_frame_never_overwrite_silently(browser, servers, runtime_model,
                                                        frames, tmp_path):
    """Issue 27 item 9: the second label is refused with the first shown; both are in the
    journal; pressed again it replaces it, and the first tab comes to show that."""
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out, "--order", "time")
    server.wait_done()
    first_tab = browser.current_window_handle
    _open(browser, server)
    browser.switch_to.new_window("tab")
    try:
        _open(browser, server)
        name = _shown(browser)
        browser.switch_to.window(first_tab)
        assert _label(browser, "1") == name          # Shutter, in the first tab
        browser.switch_to.window(browser.window_handles[-1])
        _press(browser, "o")                         # OK on the same frame, in the second
        _wait(browser, lambda d: _text(d, "saved").startswith("NOT saved"), timeout=10,
              what="the conflict")
        message = _text(browser, "saved")
        assert name in message and "Shutter" in message, message
        assert _shown(browser) == name and _text(browser, "given") == "labelled Shutter"
        shots = os.environ.get("FRAMEQC_SCREENSHOTS")
        if shots:
            browser.save_screenshot(str(Path(shots) / "label-conflict.png"))
        assert _csv(out) == {str(frames / name): "Shutter"}
        assert [(j["label"], j["previous"], j.get("refused")) for j in _journal(out)] == [
            ("Shutter", None, None), ("OK", "Shutter", "conflict")]
        _label(browser, "o")                         # pressed again, knowing: replaced
        assert _csv(out) == {str(frames / name): "OK"}
    finally:
        for tab in browser.window_handles[1:]:
            browser.switch_to.window(tab)
            browser.close()
        browser.switch_to.window(first_tab)
    _press(browser, "\ue012")                        # left arrow: back to that frame
    _wait(browser, lambda d: _shown(d) == name and _text(d, "given") == "labelled OK",
          timeout=15, what="the other tab's label")


def test_an_undo_before_the_save_returned_undoes_that_frame(browser, servers, runtime_model,
                                                           frames, tmp_path):
    """The undo of a label whose save is still on its way reverts that label, not the one
    before it (issue 27, "Also"): a stopped server holds the save."""
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out, "--order", "time")
    server.wait_done()
    _open(browser, server)
    first = _label(browser, "1")
    second = _shown(browser)
    os.kill(server.proc.pid, signal.SIGSTOP)  # a server slow to answer
    try:
        _press(browser, "1")                  # the second frame's save is on its way...
        _press(browser, "u")                  # ...and undone before it returned
        time.sleep(0.5)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    _wait(browser, lambda d: d.execute_script("return pending") == 0
          and "undone" in _text(d, "saved"), what="both saves")
    assert [(Path(j["path"]).name, j["label"]) for j in _journal(out)] == [
        (first, "Shutter"), (second, "Shutter"), (second, None)]
    assert _csv(out) == {str(frames / first): "Shutter"}
    assert _shown(browser) == second


def test_the_page_runs_under_its_csp_and_cannot_be_framed(browser, servers, runtime_model,
                                                         frames, tmp_path):
    """Issue 27 item 21: X-Frame-Options and CSP frame-ancestors; only the page's own
    scripts; a page on another port of the host (the cookie ignores ports) frames nothing."""
    import http.server
    import threading
    from functools import partial

    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [frames], out)
    server.wait_done()
    page = httpx.get(server.url)
    assert page.headers["x-frame-options"] == "DENY"
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe" not in csp and "default-src 'none'" in csp
    browser.get_log("browser")  # what earlier pages said
    _open(browser, server)
    _label(browser, "1")
    widths = browser.execute_script("return [...document.querySelectorAll('#probs .pbar div')]"
                                    ".map((e) => e.getBoundingClientRect().width)")
    assert len(widths) == 2 and max(widths) > 0  # the bars are drawn under the CSP
    _press(browser, "g")
    _wait(browser, lambda d: d.find_element("id", "grid").is_displayed(), what="the grid")
    _press(browser, "g")
    refused = [e["message"] for e in browser.get_log("browser")
               if "Content Security Policy" in e["message"]]
    assert refused == []

    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(f'<iframe id="f" src="{server.base}/" width="900" '
                                    'height="600"></iframe>')
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        frame = _wait(browser, lambda d: d.find_element("id", "f"), what="the framing page")
        time.sleep(2)
        browser.switch_to.frame(frame)
        try:
            assert browser.find_elements("id", "counts") == []
        finally:
            browser.switch_to.default_content()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert any("frame" in e["message"] and "ancestor" in e["message"]
               for e in browser.get_log("browser"))


def test_a_name_that_is_not_utf8_is_labelled(browser, servers, runtime_model, frames,
                                             tmp_path):
    """Issue 27 item 2: a file name of bytes that are not UTF-8 (old Samba/NFS shares):
    the URL is printed, the state and the POST work, the name is shown with backslash
    escapes, labels.csv holds the name's own bytes and evaluate reads it back."""
    from frameqc.runtime.lifecycle.labelled import LabelledSet

    folder = tmp_path / "smb"
    folder.mkdir()
    odd = os.fsencode(folder) + b"/x\xff.fits"
    shutil.copy(frames / "h_e_20250708_2_1_1_1.fits", os.fsdecode(odd))
    out = tmp_path / "labels.csv"
    server = servers(runtime_model["fp32"], [folder], out)
    state = server.wait_done()
    assert [f["name"] for f in state["frames"].values()] == [f"{folder}/x\\xff.fits"]
    _open(browser, server)
    assert _text(browser, "name") == "x\\xff.fits"
    _label(browser, "1")
    assert out.read_bytes().splitlines()[1:] == [odd + b",Shutter"]
    assert LabelledSet.load(out).items == ((os.fsdecode(odd), "Shutter"),)


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
    body = {"changes": [[1, "OK", None]]}
    # the cookie alone cannot label: a POST from another site would carry it
    refused = httpx.post(base + "/api/labels", json=body, cookies=cookies)
    assert refused.status_code == 403 and "X-FrameQC-Token header" in refused.text
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
    from frameqc.runtime.web.labelling import EXCLUDED, LabellingSession

    clf = Classifier.load(runtime_model["fp32"], threads=1)
    card = clf.card
    paths = sorted(str(p) for p in frames.iterdir())
    out = tmp_path / "labels.csv"
    session = LabellingSession(paths, out, card.labels, card.alerts, clf.threshold,
                               card.model_id, card.precision, "tester")
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


def test_a_cache_torn_by_a_kill_keeps_every_whole_entry(runtime_model, frames, tmp_path):
    """A run killed mid-line leaves a torn last line in the results cache: the next run
    passes over it, cuts it off, and the one after finds every frame decided."""
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.web.labelling import LabellingSession

    clf = Classifier.load(runtime_model["int8"], threads=1)
    card = clf.card
    paths = sorted(str(p) for p in frames.iterdir())[:3]
    out = tmp_path / "labels.csv"

    def session() -> LabellingSession:
        return LabellingSession(paths, out, card.labels, card.alerts, clf.threshold,
                                card.model_id, card.precision, "tester")

    first = session()
    first.classify(clf)
    cache = tmp_path / "labels.csv.cache" / "results.jsonl"
    whole = cache.read_bytes().splitlines(keepends=True)
    cache.write_bytes(b"".join(whole[:-1]) + whole[-1][:40])  # the last one torn
    second = session()
    assert len(second.entries) == 2 and not second.done
    second.classify(clf)
    assert [json.loads(line)["key"] for line in cache.read_bytes().splitlines()] == \
        [json.loads(line)["key"] for line in whole]  # the torn line cut, not kept
    assert session().done


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
