"""Decisions to a real InfluxDB 1.x, and alert hooks run as real processes.

InfluxDB is Debian's ``influxd``, started once per session with its own config in a
temporary folder, bound to free ports on 127.0.0.1, and killed at the end. The Grafana
queries are read from docs/grafana.md and run exactly as documented there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from influx import DB, Influx, free_port

from helpers import Lines, hook_recorder, run_cli, wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def influx(tmp_path_factory):
    server = Influx(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        server.query(f'CREATE DATABASE "{DB}"', db=None)
        yield server
    finally:
        server.stop()


@pytest.fixture()
def db(influx):
    """The session's InfluxDB, running, with an empty database."""
    if influx.proc is None:
        influx.start()
    influx.reset()
    return influx


#: DATE-OBS of the test frames: two hours of one night, the second hour fuller.
DATES = ["2026-07-08T22:10:00.250", "2026-07-08T22:40:00", "2026-07-08T23:05:00",
         "2026-07-08T23:20:00", "2026-07-08T23:35:00", "2026-07-08T23:50:00.5"]


def _frames(folder: Path, dates=DATES, first: int = 0) -> list[Path]:
    from frameqc.runtime.data.synthetic import make_frame, write_fits

    folder.mkdir(exist_ok=True)
    out = []
    kinds = ("good", "shutter", "wobble")
    for i, date in enumerate(dates, first):
        path = folder / f"f{i:03d} name with spaces.fits"
        write_fits(path, make_frame(kinds[i % 3], 227, 50 + i), **{"DATE-OBS": date})
        t = time.time() - 60
        os.utime(path, (t, t))
        out.append(path)
    return out


@pytest.fixture(scope="session")
def model(runtime_model, tmp_path_factory) -> str:
    """The test model's graph with a card that alerts on some of :data:`DATES`' frames.

    The random network says about 0.5 everywhere; labels in the other order and a
    threshold between the frames' probabilities make half of them ``Shutter`` alerts.
    """
    import onnx

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.model.peek import read_card

    source = Path(runtime_model["int8"])
    card = read_card(source).with_(labels=("OK", "Shutter"), alerts=("Shutter",))
    target = source.with_name("alerts.int8.onnx")  # beside it: the same weights file

    def write(card) -> None:
        proto = onnx.load(str(source), load_external_data=False)
        del proto.metadata_props[:]
        for key, value in card.to_metadata().items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(target))

    write(card)
    frames = _frames(tmp_path_factory.mktemp("probe"))
    clf = Classifier.load(target, threads=1)
    p = sorted((r.decision.probabilities["Shutter"] for r in clf.run(
        (str(f), str(f)) for f in frames)), reverse=True)
    assert p[2] > p[3] and p[2] > 0.5, p
    write(card.with_(threshold=(p[2] + max(p[3], 0.5)) / 2))
    return str(target)


def _ns(date_obs: str) -> int:
    from frameqc.runtime.output.line_protocol import timestamp_ns

    return timestamp_ns(date_obs)


# -- line protocol --------------------------------------------------------------------------

def test_awkward_values_come_back_as_they_were(db):
    from frameqc.runtime.output.line_protocol import line
    from frameqc.runtime.senders.influx_api import post, write_url

    rec = {"path": '/data/a b,c=d "q" \\x.fits', "label": "Bad frame, really", "index": 1,
           "probability": 0.75, "probabilities": {"Bad frame, really": 0.75, "OK=": 0.25},
           "doubtful": False, "date_obs": "2026-07-08T22:00:00Z", "night": "2026-07-08",
           "model": "0123456789ab", "precision": "int8", "seconds": 1}
    failed = {"path": "/data/line\nbreak.fits", "error": 'cannot read "it"',
              "model": "0123456789ab", "precision": "int8"}
    url, headers = write_url(db.write_url)
    post(url, headers, [line(rec, {"site": "La Palma"}), line(failed, {"site": "La Palma"})])
    rows = sorted(db.rows('SELECT * FROM "frameqc"'), key=lambda r: r["time"])
    assert len(rows) == 2
    got = rows[0] if rows[0].get("label") else rows[1]
    assert got["path"] == rec["path"] and got["label"] == rec["label"]
    assert got["site"] == "La Palma" and got["p_OK="] == 0.25 and got["seconds"] == 1.0
    assert got["time"] == _ns("2026-07-08T22:00:00Z") and got["doubtful"] is False
    bad = rows[1] if got is rows[0] else rows[0]
    assert bad["error"] == 'cannot read "it"' and bad["path"] == "/data/line break.fits"
    assert bad["label"] is None
    tags = {r[0] for r in db.query('SHOW TAG KEYS FROM "frameqc"')[0]["values"]}
    assert tags == {"label", "model", "precision", "site"}  # never the path


def test_format_influx_lines_are_what_influxdb_takes(model, tmp_path, db):
    frames = _frames(tmp_path / "in", DATES[:3])
    code, out, err = run_cli("classify", "--model", model, "-f", "influx",
                             "--influx-tag", "instrument=IOO", *map(str, frames))
    assert code == 0, err
    assert len(out.splitlines()) == 3 and all(ln.startswith("frameqc,") for ln in
                                              out.splitlines())
    req = urllib.request.Request(f"{db.write_url}&precision=ns", data=out.encode(),
                                 method="POST")
    urllib.request.urlopen(req, timeout=10).close()
    rows = db.rows('SELECT * FROM "frameqc" WHERE "instrument" = \'IOO\'')
    assert sorted(r["time"] for r in rows) == [_ns(d) for d in DATES[:3]]


# -- watch to InfluxDB ------------------------------------------------------------------------

def test_watch_writes_one_point_per_frame(model, tmp_path, db):
    frames = _frames(tmp_path / "in")
    code, out, err = run_cli("watch", "--model", model, "--once", "-f",
                             "json", "--state", str(tmp_path / "state"), "--influx",
                             db.write_url, "--influx-tag", "instrument=IOO", str(tmp_path / "in"))
    assert code == 0, err
    assert err == ""  # nothing to report: every point went
    recs = {r["path"]: r for r in map(json.loads, out.splitlines())}
    rows = db.rows('SELECT * FROM "frameqc"')
    assert len(rows) == len(frames) == len(recs)
    for row in rows:
        rec = recs[row["path"]]
        assert row["time"] == _ns(rec["date_obs"])
        assert (row["label"], row["model"], row["precision"], row["instrument"]) == (
            rec["label"], rec["model"], rec["precision"], "IOO")
        assert row["probability"] == pytest.approx(rec["probability"])
        assert row["p_Shutter"] == pytest.approx(rec["probabilities"]["Shutter"])
        assert row["p_OK"] == pytest.approx(rec["probabilities"]["OK"])
        assert row["doubtful"] is rec["doubtful"] and row["seconds"] == rec["seconds"]
        assert row["index"] == rec["index"] and row["night"] == "2026-07-08"


def _documented_queries() -> dict[str, str]:
    text = (ROOT / "docs" / "grafana.md").read_text()
    return dict(re.findall(r"<!-- query: (.+?) -->\n```sql\n(.+?)\n```", text))


def _grafana(query: str, start: str, end: str) -> str:
    """``$timeFilter`` as Grafana expands it for a dashboard's range."""
    return query.replace("$timeFilter", f"time >= {_ns(start)} and time <= {_ns(end)}")


def test_the_documented_grafana_queries(model, tmp_path, db):
    queries = _documented_queries()
    assert set(queries) == {"frames per hour", "alerts per hour", "frames per hour by label",
                            "alert probability", "last alerts"}
    _frames(tmp_path / "in")
    code, out, err = run_cli("watch", "--model", model, "--once", "-f",
                             "json", "--state", str(tmp_path / "state"), "--influx",
                             db.write_url, str(tmp_path / "in"))
    assert code == 0, err
    recs = sorted(map(json.loads, out.splitlines()), key=lambda r: r["date_obs"])
    alerts = [r for r in recs if r["label"] == "Shutter"]
    assert 0 < len(alerts) < len(recs)  # the test model says both
    night = ("2026-07-08T22:00:00Z", "2026-07-08T23:59:59Z")

    def run(name: str) -> list[dict]:
        return db.rows(_grafana(queries[name], *night))

    hours = [_ns("2026-07-08T22:00:00Z"), _ns("2026-07-08T23:00:00Z")]
    per_hour = [sum(r["date_obs"][11:13] == h for r in recs) for h in ("22", "23")]
    assert [(r["time"], r["frames"]) for r in run("frames per hour")] == list(
        zip(hours, per_hour, strict=True))
    alerts_per_hour = [sum(r["date_obs"][11:13] == h for r in alerts) for h in ("22", "23")]
    assert [r["alerts"] for r in run("alerts per hour")] == alerts_per_hour
    by_label = run("frames per hour by label")
    assert {(r["label"], r["time"]): r["frames"] for r in by_label if r["frames"]} == {
        (label, h): n for label in ("Shutter", "OK") for h, hh in zip(hours, ("22", "23"),
                                                                        strict=True)
        if (n := sum(r["label"] == label and r["date_obs"][11:13] == hh for r in recs))}
    probs = run("alert probability")
    assert [r["p_Shutter"] for r in probs] == pytest.approx(
        [r["probabilities"]["Shutter"] for r in recs])
    assert all(r["p_Wobble"] is None for r in probs)  # not a label of this model
    last = run("last alerts")
    assert [r["path"] for r in last] == [r["path"] for r in reversed(alerts)]
    assert all(r["label"] == "Shutter" for r in last)


def _count(db: Influx) -> int:
    try:
        series = db.query('SELECT count("probability") FROM "frameqc"')
    except OSError:
        return 0
    return series[0]["values"][0][1] if series else 0


def test_influxdb_down_mid_watch_loses_no_point(model, tmp_path, db):
    """The promise: spooled while InfluxDB is down, resent when it returns, none lost."""
    incoming, log = tmp_path / "in", tmp_path / "watch.log"
    _frames(incoming, DATES[:2])
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "frameqc.runtime.cli", "watch", "--model",
             model, "--interval", "0.2", "--settle", "0.5", "--state",
             str(tmp_path / "state"), "--log", str(log), "--influx", db.write_url,
             str(incoming)], stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    spool = Path(f"{log}.influx-spool")
    try:
        wait_for(lambda: _count(db) == 2, 60, "the first two points")
        db.stop()
        _frames(incoming, DATES[2:], first=2)
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == len(DATES), 60,
              "the frames decided while InfluxDB is down")
        wait_for(lambda: spool.exists() and len(spool.read_text().splitlines()) == 4, 30,
              "the points spooled")
        wait_for(lambda: "is not taking points" in (tmp_path / "stderr").read_text(), 30,
              "the sender to find InfluxDB down")
        db.start()
        wait_for(lambda: _count(db) == len(DATES), 90, "the spool resent")
        wait_for(lambda: spool.read_text() == "", 10, "the spool emptied")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    said = (tmp_path / "stderr").read_text()
    assert said.count("is not taking points") == 1
    assert f"answers again; 4 points that waited in {spool} were sent" in said
    times = sorted(r["time"] for r in db.rows('SELECT "path" FROM "frameqc"'))
    assert times == [_ns(d) for d in DATES]


def test_a_cron_run_spools_and_the_next_one_resends(model, tmp_path, db):
    log = tmp_path / "classify.log"
    frames = _frames(tmp_path / "in", DATES[:3])
    argv = ["classify", "--model", model, "--log", str(log),
            "--influx", db.write_url]
    db.stop()
    code, out, err = run_cli(*argv, *map(str, frames[:2]))
    assert code == 0 and len(out.splitlines()) == 2  # decisions printed regardless
    assert "2 waiting in" in err and len(err.splitlines()) == 2, err
    db.start()
    code, out, err = run_cli(*argv, str(frames[2]))
    assert code == 0
    spool = Path(f"{log}.influx-spool")
    assert err == (f"frameqc: --influx {db.url}/write: 3 points sent (2 of them had waited "
                   f"in {spool})\n")  # the points delivered after the outage are counted
    assert _count(db) == 3 and spool.read_text() == ""


def _odd_frame(folder: Path) -> tuple[Path, str]:
    """A frame named ``x\xff.fits`` (not UTF-8), and that name as frameqc writes it."""
    frame = _frames(folder, DATES[:1])[0]
    odd = Path(os.fsdecode(os.path.join(os.fsencode(folder), b"x\xff.fits")))
    frame.rename(odd)
    return odd, os.fsencode(odd).decode("utf-8", "backslashreplace")


def test_a_name_that_is_not_utf8_reaches_influxdb(model, tmp_path, db):
    odd, shown = _odd_frame(tmp_path / "odd")
    (normal,) = _frames(tmp_path / "in", DATES[1:2])
    code, _, err = run_cli("classify", "--model", model, "--log", str(tmp_path / "log"),
                           "--influx", db.write_url, str(odd), str(normal))
    assert code == 0 and err == "", err
    assert sorted(r["path"] for r in db.rows('SELECT "path" FROM "frameqc"')) == sorted(
        [shown, str(normal)])


def test_a_watch_refused_for_its_state_sends_nothing(model, tmp_path, db):
    """A cron run refused because another watch holds the state builds no sender: the
    point the other run keeps in its spool is neither sent by it nor touched."""
    from frameqc.runtime.serving.watch import lock_state

    incoming, state = tmp_path / "in", tmp_path / "state"
    _frames(incoming, DATES[:1])
    spool = Path(f"{state}.influx-spool")  # the other run's, a point still to send
    waiting = 'frameqc,model=m path="/a.fits",probability=0.5 1751000000000000000\n'
    spool.write_text(waiting)
    held = lock_state(state)
    try:
        code, out, err = run_cli("watch", "--once", "--model", model, "--state", str(state),
                                 "--influx", db.write_url, str(incoming))
    finally:
        os.close(held)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "another watch" in err and _count(db) == 0 and spool.read_text() == waiting


def test_the_sender_survives_anything_one_record_holds(tmp_path, db):
    from frameqc.runtime.senders.influx import InfluxSender

    err = Lines()
    sender = InfluxSender(db.write_url, tmp_path / "spool", err=err, flush_every=0.05)
    odd = [{**_good(1), "path": os.fsdecode(b"/x\xff.fits")},
           {**_good(2), "path": "/lone \ud800.fits"},
           {**_good(3), "path": "/nul\x00.fits", "date_obs": "2026-07-08T22:00:00\x00\x00"},
           {**_good(4), "probability": float("nan")},
           {**_good(5), "probability": "high"}]  # no encoding for this one: counted, said
    for i, rec in enumerate(odd):
        assert sender(rec, {}) is not False
        sender(_good(10 + i), {})
    def points() -> int:
        series = db.query('SELECT count("path") FROM "frameqc"')
        return series[0]["values"][0][1] if series else 0

    try:
        wait_for(lambda: points() == 9, 30, "every point that has an encoding")
    finally:
        alive = sender._thread.is_alive()
        sender.close()
    assert alive
    paths = {r["path"] for r in db.rows('SELECT "path" FROM "frameqc"')}
    assert {"/x\\xff.fits", "/lone \\ud800.fits", "/nul\x00.fits", "/f4.fits"} <= paths
    assert {f"/f{10 + i}.fits" for i in range(5)} <= paths
    assert sender.lost == 1 and err.text.count("cannot encode") == 1, err.text


def test_a_point_is_on_disk_before_its_frame_is_done(model, tmp_path, db):
    """SIGKILL just after watch counted a frame done: its point is not lost with the
    process; the next run delivers it."""
    incoming, state, log = tmp_path / "in", tmp_path / "state", tmp_path / "watch.log"
    _frames(incoming)
    argv = ["watch", "--model", model, "--state", str(state), "--log", str(log),
            "--influx", db.write_url, str(incoming)]
    proc = subprocess.Popen([sys.executable, "-m", "frameqc.runtime.cli", *argv,
                             "--interval", "0.2", "--settle", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (state.exists() and state.read_bytes().count(b"\n")):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    code, _, err = run_cli(*argv, "--once")
    assert code == 0, err
    assert _count(db) == len(DATES)


class _SlowInflux:
    """A real HTTP forwarder in front of the real influxd, taking ``delay`` seconds per write
    (a loaded InfluxDB at the end of a slow link), counting the points it forwards."""

    def __init__(self, db: Influx, delay: float) -> None:
        import http.server
        import threading

        self.forwarded = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                req = urllib.request.Request(db.url + self.path, data=body, method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, answer = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, answer = exc.code, exc.read()
                outer.forwarded += body.count(b"\n")
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # close() waits for writes still being forwarded:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.write_url = f"http://127.0.0.1:{self.server.server_port}/write?db={DB}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()  # none lands in the next test's database


def _spooled(n: int, start: str = "2026-07-01T00:00:00Z") -> list[str]:
    return [f'frameqc,label=OK probability=0.5,path="/old/{i}.fits" {_ns(start) + i}'
            for i in range(n)]


def _pending(spool: Path) -> int:
    from frameqc.runtime.senders.influx import Spool

    return Spool(spool).pending()


def test_cron_runs_empty_a_large_spool_bit_by_bit(model, tmp_path, db):
    """10,000 points wait; a slow InfluxDB takes only part of them per cron run. Each run
    leaves with what it delivered removed, and nothing goes twice but the batch that was
    in flight when a run ended."""
    from frameqc.runtime.senders.influx import BATCH

    log = tmp_path / "classify.log"
    spool = Path(f"{log}.influx-spool")
    spool.write_text("\n".join(_spooled(10_000)) + "\n")
    frames = _frames(tmp_path / "in", DATES[:3])
    slow = _SlowInflux(db, delay=1.5)
    left, runs = 10_000, 0
    try:
        for frame in frames[:2]:
            done = subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", "classify",
                                   "--model", model, "--log", str(log), "--influx",
                                   slow.write_url, str(frame)], capture_output=True, text=True,
                                  timeout=120)
            runs += 1
            assert done.returncode == 0, done.stderr
            now = _pending(spool)
            assert now < left, done.stderr  # progress, kept
            assert _count(db) >= 10_000 + runs - now  # what left the spool is in InfluxDB
            left = now
    finally:
        slow.close()
    assert left > 0  # the runs were cut short, as a cron run with a slow InfluxDB is
    code, _, err = run_cli("classify", "--model", model, "--log", str(log), "--influx",
                           db.write_url, str(frames[2]))
    assert code == 0, err
    assert _count(db) == 10_003 and _pending(spool) == 0
    assert slow.forwarded <= 10_000 + runs + runs * BATCH  # twice: only a batch in flight


def test_a_partial_write_drops_only_the_damaged_line(model, tmp_path, db):
    """A line torn in the spool (an unbalanced quote) among 20 whole ones: InfluxDB stores
    the others and names it; only it is dropped, and said."""
    log = tmp_path / "classify.log"
    spool = Path(f"{log}.influx-spool")
    good = _spooled(20)
    torn = good[10][:45]  # cut inside the path: its quote never closes
    assert torn.count('"') == 1
    spool.write_text("\n".join([*good[:10], torn, *good[10:]]) + "\n")
    (frame,) = _frames(tmp_path / "in", DATES[:1])
    code, _, err = run_cli("classify", "--model", model, "--log", str(log), "--influx",
                           db.write_url, str(frame))
    assert code == 0, err
    assert _count(db) == 21 and _pending(spool) == 0
    assert "; 1 refused by InfluxDB (HTTP 400: " in err and f"{torn})" in err, err


def test_an_unwritable_spool_counts_the_loss(tmp_path):
    from frameqc.runtime.senders.influx import InfluxSender

    (tmp_path / "file").write_text("a file, not a folder (root may write anywhere else)")
    port = free_port()  # nobody listens there
    err = Lines()
    sender = InfluxSender(f"http://127.0.0.1:{port}/write?db=x", tmp_path / "file" / "spool",
                          err=err, flush_every=0.05)
    rec = {"path": "a.fits", "label": "OK", "probability": 0.9, "model": "m",
           "precision": "fp32"}
    for _ in range(5):
        sender(rec, {})
    sender.close()
    assert sender.lost == 5 and sender.sent == 0
    assert "cannot write the spool" in err.text and err.text.endswith("5 lost\n")


# -- options ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "says"), [
    (["--influx", "sdb:8086"], "wants an http(s) URL"),
    (["--influx", "http://sdb:8086/"], "not a write URL"),
    (["--influx", "http://sdb:8086/write"], "needs ?db=DATABASE"),
    (["--influx", "http://sdb:8086/api/v2/write?org=lt&bucket=f"], "FRAMEQC_INFLUX_TOKEN"),
    (["--influx-tag", "instrument"], "wants KEY=VALUE"),
    (["--influx-tag", "path=x"], "a field of every point"),
    (["--on-alert", "no-such-program-frameqc"], "no such program"),
    (["--on-alert", "'unclosed"], "--on-alert"),
])
def test_bad_options_are_one_line(model, fits_dir, argv, says):
    code, out, err = run_cli("classify", "--model", model, *argv,
                             str(fits_dir / "prebinned_227.fits"))
    assert code == 2 and out == "" and says in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(("command", "otherwise"), [
    ("classify", "~/.cache/frameqc/frameqc.influx-spool"),
    ("serve", "~/.cache/frameqc/frameqc.influx-spool"),
    ("watch", "STATE.influx-spool"),
])
def test_help_and_docs_name_one_spool(command, otherwise):
    code, out, _ = run_cli(command, "--help")
    said = " ".join(out.split())
    assert code == 0 and "the state" not in said.replace("the --state", "")
    assert "".join(f"L.influx-spool with --log L, else {otherwise}".split()) in "".join(
        out.split()), said  # argparse may break a line after a hyphen
    docs = " ".join((ROOT / "docs" / "grafana.md").read_text().split())
    assert f"`{command} --log L`" in docs and "| `L.influx-spool` |" in docs
    assert f"`{otherwise}`" in docs


def test_the_spool_is_where_help_says(model, tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMEQC_CACHE", str(tmp_path / "cache"))
    (frame,) = _frames(tmp_path / "in", DATES[:1])
    down = f"http://127.0.0.1:{free_port()}/write?db=x"
    run_cli("classify", "--model", model, "--influx", down, str(frame))
    run_cli("classify", "--model", model, "--influx", down, "--log", str(tmp_path / "L"),
            str(frame))
    assert _pending(tmp_path / "cache" / "frameqc.influx-spool") == 1
    assert _pending(tmp_path / "L.influx-spool") == 1


# -- alert hooks --------------------------------------------------------------------------------

@pytest.fixture()
def recorder(tmp_path):
    """A hook that keeps each call's stdin and FRAMEQC_* variables, here as text."""
    cmd, read = hook_recorder(tmp_path)
    return cmd, lambda: [(rec, {os.fsdecode(k): os.fsdecode(v) for k, v in env.items()})
                         for rec, env in read()]


def test_a_hook_gets_each_alert_as_json_and_variables(model, tmp_path, recorder):
    cmd, calls = recorder
    frames = _frames(tmp_path / "in")
    code, out, err = run_cli("classify", "--model", model, "-f", "json",
                             "--on-alert", cmd, *map(str, frames))
    assert code == 0 and err == "", err
    recs = [json.loads(ln) for ln in out.splitlines()]
    alerts = [r for r in recs if r["label"] == "Shutter"]
    got = calls()
    assert [rec for rec, _ in got] == alerts and alerts
    streaks = _streaks(recs)
    for rec, env in got:
        assert env["FRAMEQC_PATH"] == rec["path"] and env["FRAMEQC_LABEL"] == "Shutter"
        assert float(env["FRAMEQC_PROBABILITY"]) == rec["probability"]
        assert env["FRAMEQC_MODEL"] == rec["model"]
        assert env["FRAMEQC_STREAK"] == str(streaks[rec["path"]])
        assert float(env["FRAMEQC_P_OK"]) == rec["probabilities"]["OK"]
        assert env["FRAMEQC_DATE_OBS"] == rec["date_obs"]


def _streaks(recs: list[dict]) -> dict[str, int]:
    """Each alert's place in its run of consecutive alerts."""
    out, run = {}, 0
    for rec in recs:
        run = run + 1 if rec["label"] == "Shutter" else 0
        if run:
            out[rec["path"]] = run
    return out


def _alert(i: int) -> dict:
    return {"path": f"/f{i}.fits", "label": "Wobble", "probability": 0.9, "model": "m",
            "precision": "int8"}


def _good(i: int) -> dict:
    return {"path": f"/f{i}.fits", "label": "OK", "probability": 0.9, "model": "m",
            "precision": "int8"}


def test_a_hanging_hook_never_delays_a_decision(tmp_path):
    from frameqc.runtime.senders.hooks import QUEUE_MAX, AlertHook

    pidfile = tmp_path / "pid"
    err = Lines()
    hook = AlertHook(f"sh -c 'sleep 60 & echo $! > {pidfile}; wait'", ("Wobble",),
                     timeout=1.0, err=err)
    start = time.perf_counter()
    slowest = 0.0
    for i in range(2000):  # far faster than any model decides
        t = time.perf_counter()
        hook(_alert(i), {})
        slowest = max(slowest, time.perf_counter() - t)
    took = time.perf_counter() - start
    assert took < 1.0 and slowest < 0.05, (took, slowest)
    assert hook.fired == 2000 and hook.dropped >= 2000 - QUEUE_MAX - 1
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, "the hook's child")
    hook.close(wait=0)  # no grace: the running hook is killed with its group
    child = int(pidfile.read_text())
    wait_for(lambda: not Path(f"/proc/{child}").exists()
          or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2], 10,
          "the hook's whole process group killed")
    assert "at exit: 1 alert hook cut short (killed)" in err.text
    assert "hooks are waiting; alert for" in err.text


def test_a_slow_hook_while_watch_decides(model, tmp_path):
    """A hook that overruns its timeout on every alert; the watch ends on time regardless."""
    frames = _frames(tmp_path / "in")
    start = time.monotonic()
    code, out, err = run_cli("watch", "--model", model, "--once",
                             "--state", str(tmp_path / "state"), "-f", "json",
                             "--on-alert", "sleep 60", "--alert-timeout", "1",
                             str(tmp_path / "in"))
    took = time.monotonic() - start
    assert code == 0 and len(out.splitlines()) == len(frames)
    assert err.count("timed out after 1 s (killed)") >= 1
    assert took < 30, took


def test_a_failing_hook_is_one_line_and_changes_nothing(model, fits_dir, tmp_path):
    frames = _frames(tmp_path / "in")
    code, out, err = run_cli("classify", "--model", model, "-f", "json",
                             "--on-alert", "sh -c 'echo boom >&2; exit 3'",
                             *map(str, frames))
    alerts = [r for r in map(json.loads, out.splitlines()) if r["label"] == "Shutter"]
    assert code == 0 and len(out.splitlines()) == len(frames)
    lines = err.splitlines()
    assert len(lines) == len(alerts) and all("exited with 3: boom" in ln for ln in lines)


def test_alert_after_fires_once_per_streak(recorder):
    from frameqc.runtime.senders.hooks import AlertHook

    cmd, calls = recorder
    hook = AlertHook(cmd, ("Wobble", "Shutter"), after=3, err=Lines())
    failed = {"path": "/x.fits", "error": "truncated", "model": "m", "precision": "int8"}
    seq = [_alert(0), _alert(1), _good(2),  # two alerts: no
           _alert(3), _alert(4), failed, _alert(5),  # third in a row (a failure between)
           _alert(6), _alert(7),  # the streak goes on: no second call
           _good(8), _alert(9), _alert(10), _alert(11),  # ended by a good frame: again
           _good(12)]
    for rec in seq:
        hook(rec, {})
    hook.close()
    got = calls()
    assert [rec["path"] for rec, _ in got] == ["/f5.fits", "/f11.fits"]
    assert [env["FRAMEQC_STREAK"] for _, env in got] == ["3", "3"]


def test_a_card_without_alerts_says_the_hook_will_not_run():
    from frameqc.runtime.senders.hooks import AlertHook

    err = Lines()
    hook = AlertHook("true", (), err=err)
    hook(_alert(0), {})
    hook.close()
    assert hook.fired == 0 and "names no alert labels" in err.text


# -- serve ------------------------------------------------------------------------------------

def test_serve_sends_points_runs_hooks_and_shows_its_sinks(model, tmp_path, db,
                                                           recorder):
    from serving import Server

    cmd, calls = recorder
    frames = _frames(tmp_path / "in")
    server = Server(model, tmp_path / "s.sock", "--influx", db.write_url,
                    "--on-alert", cmd, "--alert-after", "1",
                    env={"FRAMEQC_CACHE": str(tmp_path / "cache")})
    try:
        code, out, err = run_cli("classify", "--model", model,
                                 "--socket", str(server.sock), "-f", "json",
                                 *map(str, frames))
        assert code == 0, err
        recs = [json.loads(ln) for ln in out.splitlines()]
        wait_for(lambda: _count(db) == len(frames), 30, "the server's points")
        alerts = [r for r in recs if r["label"] == "Shutter"]
        starts = [p for p, n in _streaks(recs).items() if n == 1]  # --alert-after 1
        assert len(starts) < len(alerts)  # the frames have a streak longer than 1
        wait_for(lambda: [r["path"] for r, _ in calls()] == starts, 30, "the server's hooks")
        sinks = server.status()["sinks"]
        assert sinks[0]["sink"] == "influx" and sinks[0]["sent"] == len(frames)
        assert sinks[0]["down"] is None and sinks[0]["pending"] == 0
        assert sinks[1]["sink"] == "on-alert" and sinks[1]["ran"] == len(starts)
        code, text, _ = run_cli("status", "--socket", str(server.sock))
        assert f"influx: sent {len(frames)}, " in text
        assert (tmp_path / "cache" / "frameqc.influx-spool").read_bytes() == b""
    finally:
        assert server.stop() == 0


def test_an_influxdb2_url_sends_the_token(tmp_path, monkeypatch):
    """InfluxDB 1.6 has no v2 API: a real HTTP server on 127.0.0.1 takes the request."""
    import http.server
    import threading

    from frameqc.runtime.senders.influx import InfluxSender

    seen: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers["Authorization"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("FRAMEQC_INFLUX_TOKEN", "s3cret")
    try:
        url = f"http://127.0.0.1:{server.server_port}/api/v2/write?org=lt&bucket=frameqc"
        sender = InfluxSender(url, tmp_path / "spool", err=Lines(), flush_every=0.05)
        sender(_good(1), {})
        sender.close()
    finally:
        server.shutdown()
        server.server_close()
    (path, auth, body), = seen
    assert path == "/api/v2/write?org=lt&bucket=frameqc&precision=ns"
    assert auth == "Token s3cret" and body.startswith(b"frameqc,label=OK,model=m,precision=int8 ")
    assert sender.sent == 1 and (tmp_path / "spool").read_bytes() == b""
