"""``frameqc watch`` on a real folder: once per frame, only complete frames, restarts."""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_cli


def age(path, seconds: float = 60) -> None:
    """Make a file look finished ``seconds`` ago."""
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_once_remembers_across_runs(runtime_model, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    incoming.mkdir()
    for name in ("full_good.fits", "prebinned_227.fits"):
        shutil.copy(fits_dir / name, incoming / name)
        age(incoming / name)
    (incoming / "broken.fits").write_bytes(b"SIMPLE  = junk")
    age(incoming / "broken.fits")
    argv = ("watch", "--model", str(runtime_model["int8"]), "--state", str(state), "--once",
            "-f", "json", str(incoming))
    code, out, err = run_cli(*argv)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(rows) == 3 and "broken.fits" in err
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows if "label" in r) == [
        "full_good.fits", "prebinned_227.fits"]
    for _ in range(2):  # the broken frame is tried by the next runs, 3 times in all
        code, out, _ = run_cli(*argv)
        assert code == 1 and [json.loads(line)["path"].rsplit("/", 1)[1]
                              for line in out.splitlines()] == ["broken.fits"]
    code, out, _ = run_cli(*argv)
    assert code == 0 and out == ""  # nothing twice, and the broken frame given up
    shutil.copy(fits_dir / "full_shutter.fits", incoming / "full_good.fits")  # rewritten
    age(incoming / "full_good.fits", 30)
    code, out, _ = run_cli(*argv)
    assert [json.loads(line)["path"].rsplit("/", 1)[1] for line in out.splitlines()] == [
        "full_good.fits"]
    assert sorted(os.listdir(incoming)) == ["broken.fits", "full_good.fits",
                                            "prebinned_227.fits"]  # nothing written there


def test_fresh_files_wait_until_they_settle(runtime_model, fits_dir, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(fits_dir / "full_good.fits", incoming / "new.fits")  # mtime: now
    shutil.copy(fits_dir / "full_good.fits", incoming / "newer.fits")
    code, out, err = run_cli("watch", "--model", str(runtime_model["int8"]), "--state",
                             str(tmp_path / "s"), "--settle", "30", "--once", str(incoming))
    assert code == 0 and out == ""
    assert err == ("frameqc watch: 2 frames not settled yet (changed less than --settle 30 s "
                   "ago); left for the next run\n")


def test_live_watch_takes_a_frame_written_slowly(runtime_model, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    incoming.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "frameqc.runtime.cli", "watch", "--model",
         str(runtime_model["int8"]), "--state", str(state), "--interval", "0.2", "--settle",
         "1.0", "-f", "json", str(incoming)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        raw = (fits_dir / "full_good.fits").read_bytes()
        with open(incoming / "arriving.fits", "wb") as fh:  # written in pieces, like a copy
            for i in range(0, len(raw), len(raw) // 4):
                fh.write(raw[i: i + len(raw) // 4])
                fh.flush()
                time.sleep(0.4)
        deadline = time.monotonic() + 60
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 1 and "label" in rows[0], (rows, err)
    entries = [json.loads(line) for line in state.read_text().splitlines()]
    assert len(entries) == 1 and entries[0]["size"] == len(raw)


# -- what is done, and when it is forgotten ------------------------------------------------

@pytest.fixture(scope="module")
def classifier(runtime_model):
    from frameqc.runtime.engine.pipeline import Classifier

    return Classifier.load(runtime_model["int8"], 1)


def watcher(classifier, incoming: Path, state: Path, **kw):
    """A Watcher on ``incoming`` writing JSON lines to a string; returns (watcher, out, err)."""
    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.serving.watch import Watcher

    out, err = io.StringIO(), io.StringIO()
    destinations = Destinations("json", out=out, err=err, **kw)
    destinations.start(classifier.labels)
    return (Watcher(classifier, incoming, state, destinations, settle=0, err=err, retry_after=0),
            out, err)


def names(out: io.StringIO) -> list[str]:
    return [Path(json.loads(line)["path"]).name for line in out.getvalue().splitlines()]


def two_frames(fits_dir, incoming: Path) -> None:
    incoming.mkdir()
    for name in ("full_good.fits", "prebinned_227.fits"):
        shutil.copy2(fits_dir / name, incoming / name)
        age(incoming / name)


def test_an_empty_listing_forgets_nothing(classifier, fits_dir, tmp_path):
    """A network mount that drops leaves an empty mount point; when it returns, nothing is
    classified again. A folder that lists other frames is evidence: that forgets."""
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    two_frames(fits_dir, incoming)
    w, out, _ = watcher(classifier, incoming, state)
    try:
        assert w.scan() == 2
        incoming.rename(tmp_path / "mounted")
        incoming.mkdir()  # the bare mount point
        assert w.scan() == 0
        incoming.rmdir()
        (tmp_path / "mounted").rename(incoming)  # the mount is back
        assert w.scan() == 0 and names(out) == ["full_good.fits", "prebinned_227.fits"]
        moved = (incoming / "full_good.fits").rename(tmp_path / "full_good.fits")
        assert w.scan() == 0 and len(w.done) == 1  # gone from a listing with frames
        moved.rename(incoming / "full_good.fits")
        assert w.scan() == 1  # forgotten, so taken as new
    finally:
        w.close()


def test_a_frame_that_cannot_be_stat_ed_is_said_and_remembered(classifier, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    two_frames(fits_dir, incoming)
    w, out, err = watcher(classifier, incoming, state)
    try:
        assert w.scan() == 2
        (incoming / "full_good.fits").rename(tmp_path / "full_good.fits")
        (incoming / "full_good.fits").symlink_to("full_good.fits")  # a loop: ELOOP
        assert w.scan() == 0
        assert err.getvalue().count("full_good.fits: cannot read its state") == 1
        w.scan()
        assert err.getvalue().count("cannot read its state") == 1  # not every scan
        (incoming / "full_good.fits").unlink()
        (tmp_path / "full_good.fits").rename(incoming / "full_good.fits")
        assert w.scan() == 0 and len(names(out)) == 2  # still known: not classified again
    finally:
        w.close()


def test_a_failing_log_leaves_its_frames_to_do(runtime_model, fits_dir, tmp_path):
    incoming, state, log = tmp_path / "incoming", tmp_path / "state.jsonl", tmp_path / "log"
    two_frames(fits_dir, incoming)
    argv = ["watch", "--model", str(runtime_model["int8"]), "--state", str(state), "--once",
            "-f", "json", str(incoming)]
    code, _, err = run_cli(*argv, "--log", "/dev/full")  # opens, then every write fails
    assert code == 1 and "not done, taken again by a later scan" in err
    assert not state.exists() or state.read_text() == ""
    code, _out, err = run_cli(*argv, "--log", str(log))
    assert code == 0, err
    assert sorted(Path(json.loads(line)["path"]).name for line in log.read_text().splitlines()
                  ) == ["full_good.fits", "prebinned_227.fits"]
    assert len(state.read_text().splitlines()) == 2


#: ``frameqc ARGV`` in a child whose file-size limit is ``LIMIT`` bytes: the write that
#: crosses it is cut short by the kernel and the next one fails (EFBIG), as on a filling disk.
_LIMITED = """
import resource, signal, sys
from frameqc.runtime.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


def _limited(limit: int, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _LIMITED, str(limit), *argv],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("full", ["log", "spool"])
def test_a_line_cut_short_by_a_full_disk_leaves_the_frame_to_do(runtime_model, fits_dir,
                                                                 tmp_path, full):
    """A short write of the --log line, or of the InfluxDB point in the spool beside it:
    the file is left ending on its last whole line, and the frame is taken again."""
    incoming, state, log = tmp_path / "incoming", tmp_path / "state.jsonl", tmp_path / "log"
    spool = tmp_path / "log.influx-spool"
    two_frames(fits_dir, incoming)
    before = b'{"an": "earlier line"}\n' * 1000
    (log if full == "log" else spool).write_bytes(before)
    argv = ["watch", "--model", str(runtime_model["int8"]), "--state", str(state), "--once",
            "-f", "json", "--log", str(log), "--influx", "http://127.0.0.1:9/write?db=x",
            str(incoming)]
    child = _limited(len(before) + 40, *argv)  # room for 40 bytes of the next line
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    assert "not done, taken again by a later scan" in child.stderr
    assert (log if full == "log" else spool).read_bytes() == before  # whole lines only
    assert not state.exists() or state.read_text() == ""
    code, _, err = run_cli(*argv)
    assert code == 0, err
    assert len(state.read_text().splitlines()) == 2
    decided = [json.loads(ln) for ln in log.read_bytes().splitlines()
               if not ln.startswith(b'{"an"')]
    assert {Path(r["path"]).name for r in decided} == {"full_good.fits", "prebinned_227.fits"}
    points = [ln for ln in spool.read_bytes().splitlines() if ln.startswith(b"frameqc")]
    assert {re.search(rb'path="[^"]*/([^/"]+)"', p).group(1) for p in points} == {
        b"full_good.fits", b"prebinned_227.fits"}  # InfluxDB is down: they wait there


def test_a_failing_stdout_leaves_its_frames_to_do(runtime_model, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    two_frames(fits_dir, incoming)
    argv = [sys.executable, "-m", "frameqc.runtime.cli", "watch", "--model",
            str(runtime_model["int8"]), "--state", str(state), "--once", str(incoming)]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "No space left on device" in proc.stderr
    assert not state.exists() or state.read_text() == ""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 2, proc.stderr


def test_one_watch_per_state(classifier, runtime_model, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    two_frames(fits_dir, incoming)
    argv = ("watch", "--model", str(runtime_model["int8"]), "--state", str(state), "--once",
            str(incoming))
    w, _out, _ = watcher(classifier, incoming, state)  # a slow run, still going
    try:
        code, cron_out, err = run_cli(*argv)  # cron starts the next one
        assert code == 2 and cron_out == "" and len(err.splitlines()) == 1, err
        assert f"another watch (pid {os.getpid()}) is using it" in err
        assert w.scan() == 2
    finally:
        w.close()
    code, cron_out, _ = run_cli(*argv)
    assert code == 0 and cron_out == ""  # nothing twice


def test_compaction_has_a_temporary_name_of_its_own(classifier, fits_dir, tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state.jsonl"
    two_frames(fits_dir, incoming)
    state.write_text("".join(json.dumps({"name": f"old{i}.fits", "size": 1, "mtime_ns": i})
                             + "\n" for i in range(200)))
    other = tmp_path / "state.jsonl.tmp"  # the name every compaction used to share
    other.write_text("someone else's\n")
    w, _, err = watcher(classifier, incoming, state)
    try:
        assert w.scan() == 2 and len(state.read_text().splitlines()) == 2, err.getvalue()
    finally:
        w.close()
    assert other.read_text() == "someone else's\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "incoming", "state.jsonl", "state.jsonl.lock", "state.jsonl.tmp"]


def test_state_naming_a_directory_is_one_line(runtime_model, tmp_path):
    code, _, err = run_cli("watch", "--model", str(runtime_model["int8"]), "--state",
                           str(tmp_path), "--once", str(tmp_path))
    assert code == 2 and err == f"frameqc: --state {tmp_path}: a directory; name a file\n"


# -- watch ---------------------------------------------------------------------------------

class StubClassifier:
    """Stands in for the model: decides by file content, fails while told to."""

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
