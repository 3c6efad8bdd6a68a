"""``frameqc watch`` on a real folder: once per frame, only complete frames, restarts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

from conftest import run_cli


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
    code, out, _ = run_cli("watch", "--model", str(runtime_model["int8"]), "--state",
                           str(tmp_path / "s"), "--settle", "30", "--once", str(incoming))
    assert code == 0 and out == ""


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
