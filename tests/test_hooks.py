"""Alert hooks on a real night: odd records, streaks across runs, reloads, hooks that
misbehave, and the documented examples with hostile file names.

Hooks are real shell commands run by real ``classify``, ``watch`` and ``serve``
processes; the model is the torch-free ``runtime_model`` with cards that make every
frame an alert (``alert``) or none (``good``).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pytest

from frameqc.runtime.util.text import readable

from helpers import Lines, frameqc, hook_recorder, run_cli, wait_for

ROOT = Path(__file__).resolve().parent.parent
DATE = "2026-07-08T22:10:00"


def _with_card(runtime_model, name: str, **changes) -> str:
    """The test model's graph under another card (written beside it: the same weights)."""
    import onnx

    from frameqc.runtime.model.peek import read_card

    source = Path(runtime_model["int8"])
    card = read_card(source).with_(**changes)
    target = source.with_name(f"hooks-{name}.int8.onnx")
    proto = onnx.load(str(source), load_external_data=False)
    del proto.metadata_props[:]
    for key, value in card.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return str(target)


@pytest.fixture(scope="session")
def cards(runtime_model) -> dict[str, str]:
    """``alert``: every decided frame is an alert (Shutter or Wobble, both alert labels);
    ``good``: no frame is (Shutter would need a probability of 1)."""
    return {"alert": _with_card(runtime_model, "alert", labels=("Shutter", "Wobble"),
                                alerts=("Shutter", "Wobble")),
            "good": _with_card(runtime_model, "good", labels=("OK", "Shutter"),
                               alerts=("Shutter",), threshold=1.0)}


def _frame(folder: Path, name: str | bytes, seed: int = 1, date: str = DATE) -> Path:
    """A frame named ``name`` (bytes for a name that is not UTF-8), an hour old."""
    from frameqc.runtime.data.synthetic import make_frame, write_fits

    folder.mkdir(parents=True, exist_ok=True)
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    write_fits(path, make_frame("shutter", 227, seed), **{"DATE-OBS": date})
    os.utime(path, (time.time() - 3600,) * 2)
    return path


@pytest.fixture()
def recorder(tmp_path):
    """A hook keeping each call's stdin and environment (raw bytes) in a folder."""
    return hook_recorder(tmp_path)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _kill_all(pidfile: Path) -> None:
    for pid in map(int, pidfile.read_text().split() if pidfile.exists() else ()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_influxdb_token_never_reaches_a_hook(cards, tmp_path, recorder, monkeypatch):
    cmd, calls = recorder
    monkeypatch.setenv("FRAMEQC_INFLUX_TOKEN", "secret-token")
    code, _, err = run_cli("classify", "--model", cards["alert"], "--on-alert", cmd,
                           str(_frame(tmp_path / "in", "a.fits")))
    assert code == 0, err
    [(_, env)] = calls()
    assert b"FRAMEQC_PATH" in env and b"FRAMEQC_INFLUX_TOKEN" not in env


# -- 3: anything one record holds --------------------------------------------------------

def test_a_nul_in_a_header_value_never_stops_the_hooks(cards, tmp_path, recorder):
    cmd, calls = recorder
    nul = _frame(tmp_path / "in", "nul.fits")
    raw = nul.read_bytes()
    nul.write_bytes(raw.replace(DATE.encode(), b"2026-07-08T22:10\0\0\0", 1))
    later = [_frame(tmp_path / "in", f"later{i}.fits", seed=i) for i in (2, 3)]
    code, _, err = run_cli("classify", "--model", cards["alert"], "-f", "json",
                           "--on-alert", cmd, str(nul), *map(str, later))
    assert code == 0, err
    got = calls()
    assert [rec["path"] for rec, _ in got] == [str(nul), *map(str, later)]
    rec, env = got[0]
    assert rec["date_obs"] == "2026-07-08T22:10\0\0\0"  # stdin: the record as it is
    assert env[b"FRAMEQC_DATE_OBS"] == b"2026-07-08T22:10"
    assert env[b"FRAMEQC_PATH"] == os.fsencode(nul)
    assert err.count("NUL") == 1 and len(err.splitlines()) == 1, err


def test_a_hook_worker_survives_any_record(recorder):
    from frameqc.runtime.senders.hooks import AlertHook

    cmd, calls = recorder
    err = Lines()
    hook = AlertHook(cmd, ("Wobble",), err=err)
    base = {"label": "Wobble", "probability": 0.9, "model": "m", "precision": "int8"}
    hostile = [
        {**base, "path": "/a\0b.fits"},  # a NUL
        {**base, "path": "/c\ud800.fits"},  # a lone surrogate: no bytes stand for it
        {**base, "path": "/d.fits", "label": ["Wobble"]},  # not a label at all
        {**base, "path": "/e.fits", "probabilities": {"Wobble": "high", "OK": None}},
        {**base, "path": "/f.fits", "date_obs": "2026" * 100_000},  # over what exec takes
        {**base, "path": "/g.fits", "night": object()},  # not even JSON
    ]
    for rec in hostile:
        hook(rec, {})
    hook({**base, "path": "/ok.fits"}, {})
    hook.close()
    got = {rec["path"]: env for rec, env in calls()}
    assert "/ok.fits" in got and got["/ok.fits"][b"FRAMEQC_LABEL"] == b"Wobble"
    assert got["/a\0b.fits"][b"FRAMEQC_PATH"] == b"/ab.fits"
    assert got["/c\\ud800.fits"][b"FRAMEQC_PATH"] == b"/c\\ud800.fits"  # stdin: as shown
    assert "/d.fits" not in got
    assert got["/e.fits"][b"FRAMEQC_P_WOBBLE"] == b"high"
    assert b"FRAMEQC_DATE_OBS" not in got["/f.fits"]
    assert hook.ran == 6 and hook.failed == 1  # /g.fits: said, the worker goes on
    assert "/g.fits" in err.text and "Traceback" not in err.text


def test_a_file_name_that_is_not_utf8_reaches_the_hook_as_its_bytes(cards, tmp_path,
                                                                     recorder):
    cmd, calls = recorder
    name = b"x\xff\xfe y.fits"
    path = _frame(tmp_path / "in", name)
    proc = subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", "classify",
                           "--model", cards["alert"], "-f", "json", "--on-alert", cmd,
                           os.fsencode(path)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (_, env), = calls()
    assert env[b"FRAMEQC_PATH"] == os.fsencode(path) and os.fsencode(path).endswith(name)


# -- 13: a streak spans runs ----------------------------------------------------------------

def test_a_streak_spans_cron_runs_of_watch(cards, tmp_path, recorder):
    cmd, calls = recorder
    incoming, state = tmp_path / "in", tmp_path / "watch.state"

    def cron(model: str, n: int) -> None:
        _frame(incoming, f"f{n:02d}.fits", seed=n)
        res = frameqc("watch", "--once", "--model", cards[model], "--state", str(state),
                      "--alert-after", "2", "--on-alert", cmd, "-f", "json", str(incoming))
        assert res.returncode == 0, res.stderr
        assert len(res.stdout.splitlines()) == 1  # one new frame a run

    cron("alert", 1)
    assert calls() == []
    cron("alert", 2)  # the second alert in a row, in another process
    assert [rec["path"] for rec, _ in calls()] == [str(incoming / "f02.fits")]
    assert calls()[0][1][b"FRAMEQC_STREAK"] == b"2"
    cron("alert", 3)  # the streak goes on: no second call
    cron("good", 4)  # ended
    cron("alert", 5)
    assert len(calls()) == 1
    cron("alert", 6)
    assert [rec["path"] for rec, _ in calls()][1:] == [str(incoming / "f06.fits")]


@pytest.mark.parametrize("after", [None, 2])
def test_a_frame_taken_again_after_a_failed_log_alerts_once(cards, tmp_path, recorder, after):
    """watch takes a frame again when its decision could not be written everywhere (a
    full disk under --log): its alert runs the hook once and counts once in the streak."""
    cmd, calls = recorder
    incoming, state, log = tmp_path / "in", tmp_path / "watch.state", tmp_path / "watch.log"
    argv = ["watch", "--once", "--model", cards["alert"], "--state", str(state),
            "--on-alert", cmd, *(["--alert-after", str(after)] if after else []), str(incoming)]
    _frame(incoming, "f01.fits", seed=1)
    res = frameqc(*argv, "--log", "/dev/full")  # opens, then every write fails
    assert res.returncode == 1 and "taken again by a later scan" in res.stderr, res.stderr
    res = frameqc(*argv, "--log", str(log))  # the same frame, written this time
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr
    assert len(calls()) == (0 if after else 1)
    _frame(incoming, "f02.fits", seed=2)  # the streak's second alert, not its third
    res = frameqc(*argv, "--log", str(log))
    assert res.returncode == 0, res.stderr
    assert [rec["path"] for rec, _ in calls()] == [str(incoming / "f01.fits")] * (not after) \
        + [str(incoming / "f02.fits")]


def test_a_frame_written_again_under_its_name_alerts_again(cards, tmp_path, recorder):
    """Another file under the same name (another size or time) is another frame."""
    cmd, calls = recorder
    incoming, state = tmp_path / "in", tmp_path / "watch.state"
    for seed in (1, 2):
        _frame(incoming, "latest.fits", seed=seed)
        res = frameqc("watch", "--once", "--model", cards["alert"], "--state", str(state),
                      "--on-alert", cmd, str(incoming))
        assert res.returncode == 0 and len(res.stdout.splitlines()) == 1, res.stderr
    assert [rec["path"] for rec, _ in calls()] == [str(incoming / "latest.fits")] * 2


def test_a_streak_file_that_cannot_be_kept_is_said_and_the_hook_runs(cards, tmp_path,
                                                                     recorder):
    """watch without --alert-after keeps its last alert beside its state: where it cannot,
    it says what that costs, in words that need no --alert-after, and alerts all the same."""
    cmd, calls = recorder
    incoming, state = tmp_path / "in", tmp_path / "watch.state"
    Path(f"{state}.alert-streak").mkdir(parents=True)  # no file can be written there
    _frame(incoming, "f01.fits")
    res = frameqc("watch", "--once", "--model", cards["alert"], "--state", str(state),
                  "--on-alert", cmd, str(incoming))
    assert res.returncode == 0 and len(calls()) == 1, res.stderr
    said = [ln for ln in res.stderr.splitlines() if "alert-streak" in ln]
    assert said and all(ln.startswith("frameqc: --on-alert: cannot ") and ln.endswith(
        "the last alert is remembered in this run only (a frame taken again by a later run "
        "may alert twice)") for ln in said), res.stderr


def test_classify_runs_the_hook_at_each_alert_and_keeps_no_streak(cards, tmp_path, recorder):
    """Without --alert-after every alert runs the hook: classify run twice on one frame
    (cron, a reused name) runs it twice, and writes no streak file beside its --log."""
    cmd, calls = recorder
    frame, log = _frame(tmp_path / "in", "latest.fits"), tmp_path / "classify.log"
    for _ in range(2):
        res = frameqc("classify", "--model", cards["alert"], "--log", str(log),
                      "--on-alert", cmd, str(frame))
        assert res.returncode == 0, res.stderr
    assert len(calls()) == 2 and not Path(f"{log}.alert-streak").exists()


def test_a_restarted_watch_goes_on_with_its_streak(cards, tmp_path, recorder):
    cmd, calls = recorder
    incoming, state, log = tmp_path / "in", tmp_path / "watch.state", tmp_path / "watch.log"
    for n in (1, 2):  # a resident watch, stopped after each alert and started again
        _frame(incoming, f"f{n}.fits", seed=n)
        with open(tmp_path / f"stderr{n}", "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "frameqc.runtime.cli", "watch", "--model",
                 cards["alert"], "--interval", "0.2", "--state", str(state), "--log",
                 str(log), "--alert-after", "2", "--on-alert", cmd, str(incoming)],
                stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for(lambda n=n: log.exists() and len(log.read_text().splitlines()) == n, 60,
                  "the frame decided")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, (tmp_path / f"stderr{n}").read_text()
    assert [rec["path"] for rec, _ in calls()] == [str(incoming / "f2.fits")]


def test_serve_keeps_its_streak_beside_its_log(cards, tmp_path, recorder):
    from serving import Server

    cmd, calls = recorder
    log = tmp_path / "serve.log"
    frames = [_frame(tmp_path / "in", f"f{i}.fits", seed=i) for i in (1, 2)]
    for frame in frames:  # one alert each, and a restart between them
        with Server(cards["alert"], tmp_path / "s.sock", "--log", str(log), "--alert-after",
                    "2", "--on-alert", cmd) as server:
            code, _, err = run_cli("classify", "--socket", str(server.sock), "--model",
                                   cards["alert"], str(frame))
            assert code == 0, err
            assert server.stop() == 0  # waits for the hook it started
    assert [rec["path"] for rec, _ in calls()] == [str(frames[1])]
    kept = json.loads(Path(f"{log}.alert-streak").read_text())
    st = frames[1].stat()
    assert kept == {"streak": 2, "last": f"{frames[1]} {st.st_size} {st.st_mtime_ns}"}


# -- 14: a reload brings the new card's alert labels ------------------------------------------

def test_a_reload_brings_the_new_alert_labels(runtime_model, cards, tmp_path, recorder):
    from frameqc.runtime.engine.pipeline import Classifier

    from serving import Server

    cmd, calls = recorder
    frame = _frame(tmp_path / "in", "frame.fits")
    top = next(Classifier.load(cards["alert"], threads=1).run([(str(frame), str(frame))]))
    labels = ("Shutter", "Wobble") if top.decision.index == 0 else ("Wobble", "Shutter")
    wobble = _with_card(runtime_model, "reload-wobble", labels=labels, alerts=("Wobble",),
                        threshold=1.0)  # every frame Shutter, not an alert
    both = _with_card(runtime_model, "reload-both", labels=labels,
                      alerts=("Shutter", "Wobble"))  # this frame Shutter, an alert
    link = tmp_path / "model.onnx"
    link.symlink_to(wobble)

    def classify() -> dict:
        code, out, err = run_cli("classify", "--socket", str(server.sock), "--model",
                                 str(link), "-f", "json", str(frame))
        assert code == 0, err
        return json.loads(out)

    with Server(link, tmp_path / "s.sock", "--on-alert", cmd) as server:
        assert classify()["label"] == "Shutter"
        assert server.status()["sinks"][0]["fired"] == 0
        new = tmp_path / "model.onnx.new"
        new.symlink_to(both)
        new.replace(link)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: server.status()["model"]["path"] == both, 60, "the reload")
        assert classify()["label"] == "Shutter"
        wait_for(lambda: len(calls()) == 1, 30, "the hook after the reload")
        assert "Shutter, Wobble" in server.log.read_text()
        assert server.stop() == 0


# -- 15, 16, 17: hooks that misbehave -------------------------------------------------------

def test_a_hook_that_leaves_a_background_child_is_not_hanging(cards, tmp_path):
    ran, kids = tmp_path / "ran", tmp_path / "kids"
    frames = [_frame(tmp_path / "in", f"f{i}.fits", seed=i) for i in (1, 2)]
    hook = f"sh -c 'echo $$ >> {ran}; sleep 30 & echo $! >> {kids}'"
    try:
        res = frameqc("classify", "--model", cards["alert"], "--alert-timeout", "5",
                      "--on-alert", hook, *map(str, frames))
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""  # no hook timed out: each exited at once
        assert len(ran.read_text().split()) == 2
    finally:
        _kill_all(kids)


def _peak_kb(*argv: str) -> tuple[int, subprocess.CompletedProcess]:
    """Peak RSS of a real ``frameqc`` process (its hooks are far smaller), and its run."""
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True); "
             "sys.stderr.buffer.write(p.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m",
                          "frameqc.runtime.cli", *argv], capture_output=True, text=True,
                         timeout=300)
    return int(res.stdout), res


def test_a_hook_flooding_stderr_is_kept_to_a_bounded_tail(cards, tmp_path):
    frame = str(_frame(tmp_path / "in", "f.fits"))
    argv = ("classify", "--model", cards["alert"], "-f", "json", frame, "--on-alert")
    quiet, res = _peak_kb(*argv, "sh -c 'echo last words >&2; exit 1'")
    assert "exited with 1: last words" in res.stderr
    flood, res = _peak_kb(*argv, "sh -c 'yes flood | head -n 66666667 >&2; "
                                 "echo last words >&2; exit 1'")
    assert "exited with 1: last words" in res.stderr and len(res.stderr) < 1000
    assert flood - quiet < 64 * 1024, (quiet, flood)  # KiB: 400 MB were written


def test_a_hook_still_running_at_exit_is_killed_and_counted(cards, tmp_path):
    kids = tmp_path / "kids"
    frames = [_frame(tmp_path / "in", f"f{i}.fits", seed=i) for i in range(4)]
    try:
        res = frameqc("classify", "--model", cards["alert"], "--alert-timeout", "1",
                      "--on-alert", f"sh -c 'sleep 31 & echo $! >> {kids}; wait'",
                      *map(str, frames))
        assert res.returncode == 0, res.stderr
        pids = list(map(int, kids.read_text().split()))
        assert pids and all(_gone(pid) for pid in pids), res.stderr
        timed_out = res.stderr.count("timed out after 1 s (killed)")
        m = re.search(r"at exit: (\d+) alert hooks? cut short \(killed\), (\d+) not run",
                      res.stderr)
        assert m, res.stderr
        assert timed_out + int(m.group(1)) + int(m.group(2)) == len(frames), res.stderr
    finally:
        _kill_all(kids)


# -- 18: the documented hooks, with hostile file names ---------------------------------------

HOSTILE = ['x", "username": "duty-astronomer", "text": "all clear.fits',
           "it's $(touch PWNED) `touch PWNED` * ?\n;.fits",
           b"\xff\xfe \"x\".fits"]

STAND_IN = """#!/bin/sh
d={calls}/$(basename "$0").$$
mkdir "$d"
printf '%s\\0' "$@" > "$d/argv"
cat > "$d/stdin"
"""


def _documented() -> tuple[list[str], dict[str, str]]:
    """The ``--on-alert`` commands of docs/alerts.md, and its scripts by installed path."""
    text = (ROOT / "docs" / "alerts.md").read_text()
    commands, scripts = [], {}
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        if block.startswith("#!"):
            scripts[re.search(r"^# (/\S+):", block, re.M).group(1)] = block
            continue
        argv = shlex.split(block.replace("\\\n", " "))
        commands += [argv[i + 1] for i, a in enumerate(argv) if a == "--on-alert"]
    return commands, scripts


class _Chat(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("name", HOSTILE, ids=["json", "shell", "not-utf8"])
def test_every_documented_hook_is_safe_with_any_file_name(cards, tmp_path, name):
    commands, scripts = _documented()
    assert len(commands) >= 3 and scripts, "docs/alerts.md: where are the examples?"
    bin_, calls = tmp_path / "bin", tmp_path / "calls"
    bin_.mkdir()
    calls.mkdir()
    for program in ("mail", "ltlog"):  # the site's programs: stand-ins that keep their input
        (bin_ / program).write_text(STAND_IN.format(calls=shlex.quote(str(calls))))
        (bin_ / program).chmod(0o755)
    chat = http.server.HTTPServer(("127.0.0.1", 0), _Chat)
    threading.Thread(target=chat.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{chat.server_port}/hooks/XXXXXXXX"
    for installed, script in scripts.items():
        local = bin_ / Path(installed).name
        local.write_text(script.replace("https://chat.example.org/hooks/XXXXXXXX", url))
        local.chmod(0o755)
    frame = _frame(tmp_path / "in", name)
    raw = os.fsencode(frame)
    env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}"}
    _Chat.bodies = []
    recs = []
    try:
        for command in commands:
            for installed in scripts:
                command = command.replace(installed, str(bin_ / Path(installed).name))
            proc = subprocess.run(
                [sys.executable, "-m", "frameqc.runtime.cli", "classify", "--model",
                 cards["alert"], "-f", "json", "--on-alert", command, raw],
                capture_output=True, env=env, cwd=tmp_path, timeout=120)
            assert proc.returncode == 0 and proc.stderr == b"", (command, proc.stderr)
            recs.append(json.loads(proc.stdout))
    finally:
        chat.shutdown()
        chat.server_close()
    assert not list(tmp_path.glob("**/PWNED")), "a file name ran a command"
    seen = {}
    for call in calls.iterdir():
        argv = (call / "argv").read_bytes().split(b"\0")[:-1]
        seen[call.name.split(".")[0]] = (argv, (call / "stdin").read_bytes())
    assert set(seen) == {"mail", "ltlog"}, seen
    label, p = recs[0]["label"], recs[0]["probability"]  # the same in every run
    assert all((r["label"], r["probability"], r["path"]) == (label, p, readable(str(frame)))
               for r in recs)
    argv, stdin = seen["mail"]
    assert argv == [b"-s", f"frameqc: {label} ({p}) {DATE}".encode(), b"duty@example.org"]
    assert json.loads(stdin) in recs
    argv, _ = seen["ltlog"]
    assert argv[-2:] == [b"-m", f"{label} {p} ".encode() + raw]
    body, = _Chat.bodies  # one post, a JSON object with one text naming the frame
    message = json.loads(body)
    shown = readable(os.fsdecode(raw))  # the record's one written form of the name
    assert set(message) == {"text"}, message
    assert message["text"].startswith(f"frameqc: {label} p=")
    assert message["text"].endswith(f" {shown} (streak 1)")


# -- issue 30.10: --alert-after on classify ---------------------------------------------------

def test_alert_after_on_classify_says_where_it_belongs(cards, tmp_path):
    frame = str(_frame(tmp_path / "in", "f.fits"))
    code, out, err = run_cli("classify", "--model", cards["alert"], "--alert-after", "3",
                             "--on-alert", "true", frame)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "--alert-after" in err and "watch" in err and "serve" in err, err
