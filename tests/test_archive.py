"""``frameqc archive`` on real Dask clusters: local processes, a killed worker, resume,
and an external scheduler with its workers started as a cluster user would."""

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

from frameqc.runtime.data.synthetic import make_frame, write_fits

from helpers import frameqc, run_cli

pytest.importorskip("distributed", reason="the dask extra is part of the test install")
pa_ds = pytest.importorskip("pyarrow.dataset")

pytestmark = pytest.mark.dask

#: The ``dask`` command (``python -m dask``: a venv without its console script has it too).
DASK = [sys.executable, "-m", "dask"]


@pytest.fixture(scope="module")
def archive_dir(tmp_path_factory) -> Path:
    """60 small frames over two nights in nested folders, and two broken files."""
    root = tmp_path_factory.mktemp("archive")
    for i in range(60):
        night = root / f"2025070{8 + i % 2}"
        night.mkdir(exist_ok=True)
        hour = 21 + i % 6  # 21:00 .. 02:00 (+1 day): one observing night per folder
        day = 8 + i % 2 + (hour >= 24)
        write_fits(night / f"h_e_{i:03d}.fits", make_frame(("good", "shutter")[i % 2], 681, i),
                   **{"DATE-OBS": f"2025-07-{day:02d}T{hour % 24:02d}:15:00.000"})
    (root / "20250708" / "zz_broken.fits").write_bytes(b"SIMPLE  = junk")
    (root / "20250709" / "zz_empty.fits").write_bytes(b"")
    return root


def rows(out: Path) -> list[dict]:
    return pa_ds.dataset(str(out), format="parquet").to_table().to_pylist()


def classify_json(model: Path, paths: list[str]) -> dict[str, dict]:
    _, out, _ = run_cli("classify", "--model", str(model), "--format", "json", *paths)
    return {r["path"]: r for r in map(json.loads, out.splitlines())}


def test_local_cluster_rows_are_classify_decisions(runtime_model, archive_dir, tmp_path):
    out = tmp_path / "out"
    proc = frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                   "--workers", "2", "--batch", "8", str(archive_dir), timeout=300)
    assert proc.returncode == 1, proc.stderr  # two frames failed, as classify says
    assert "62 frames" in proc.stderr and "2 errors" in proc.stderr
    got = {r["path"]: r for r in rows(out)}
    assert len(got) == 62
    ref = classify_json(runtime_model["int8"], sorted(got))
    for path, r in got.items():
        want = ref[path]
        if "error" in want:
            assert r["error"] == want["error"] and r["label"] is None
        else:
            assert r["error"] is None and r["model"] == want["model"]
            assert (r["label"], r["index"]) == (want["label"], want["index"])
            assert r["probability"] == pytest.approx(want["probability"], abs=1e-6)
            assert r["p_Shutter"] == pytest.approx(want["probabilities"]["Shutter"], abs=1e-6)
            assert r["night"] == Path(path).parent.name[:4] + "-07-0" + Path(path).parent.name[-1]
    proc = frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                   str(archive_dir), timeout=300)
    assert proc.returncode == 2 and "add --resume" in proc.stderr


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(runtime_model, archive_dir,
                                                             tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        run = subprocess.Popen([sys.executable, "-m", "frameqc.runtime.cli", "archive",
                                "--model", str(runtime_model["fp32"]), "-o", str(out),
                                "--scheduler", cluster.scheduler_address, "--batch", "2",
                                str(archive_dir)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = next(iter(client.run(os.getpid).values()))
        os.kill(victim, signal.SIGKILL)
        _, err = run.communicate(timeout=300)
        assert run.returncode == 1, err  # the two broken frames
        done = len(list(out.glob("part-*.parquet")))
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == 62, f"{len(paths)} rows, {len(set(paths))} frames"
    assert done == 31  # one file per task, a rerun replaced its own
    assert not list(out.glob(".*.tmp"))


def test_resume_after_an_interrupted_run_adds_only_what_was_missing(runtime_model,
                                                                    archive_dir, tmp_path):
    out = tmp_path / "out"
    listing = tmp_path / "frames.txt"
    listing.write_text("".join(f"{p}\n" for p in sorted(archive_dir.rglob("*.fits"))))
    run = subprocess.Popen([sys.executable, "-m", "frameqc.runtime.cli", "archive", "--model",
                            str(runtime_model["fp32"]), "-o", str(out), "--workers", "1",
                            "--batch", "2", f"@{listing}"], stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the client and its cluster, cut off
    run.wait()
    before = {r["path"] for r in rows(out)}
    assert 0 < len(before) < 62
    proc = frameqc("archive", "--model", str(runtime_model["fp32"]), "-o", str(out),
                   "--workers", "2", "--resume", f"@{listing}", timeout=300)
    assert proc.returncode == 1, proc.stderr  # the broken frames come last in the list
    assert f"{len(before)} already done, skipped" in proc.stderr
    assert f"{62 - len(before)} frames" in proc.stderr
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == 62


def test_external_scheduler_and_workers(runtime_model, archive_dir, tmp_path):
    """Workers started as docs/archive.md says, with its Dask configuration."""
    info = tmp_path / "scheduler.json"
    docs = (Path(__file__).parent.parent / "docs" / "archive.md").read_text()
    (tmp_path / "dask").mkdir()
    (tmp_path / "dask" / "frameqc.yaml").write_text(
        re.search(r"```yaml\n(.*?)```", docs, re.S).group(1))
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    procs = [subprocess.Popen([*DASK, "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([*DASK, "worker", address, "--nworkers", "2",
                                       "--nthreads", "1", "--no-dashboard"],
                                      stderr=subprocess.DEVNULL,
                                      env=env | {"FRAMEQC_THREADS": "3",
                                                 "DASK_CONFIG": str(tmp_path / "dask")}))
        out = tmp_path / "out"
        proc = frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                       "--scheduler", address, str(archive_dir / "20250708"),
                       timeout=300)
        assert proc.returncode == 1, proc.stderr  # its broken frame
        assert len(rows(out)) == 31 and "31 frames" in proc.stderr
        from distributed import Client

        from frameqc.runtime.archive.tasks import PLUGIN

        with Client(address) as client:  # each session: its worker's --nthreads, not 3
            threads = client.run(lambda dask_worker:
                                 dask_worker.plugins[PLUGIN].classifier.wait_model().threads)
            tuned = client.run(lambda dask_worker: (
                os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                "profile" not in dask_worker.periodic_callbacks))
        assert list(threads.values()) == [1, 1]
        assert list(tuned.values()) == [(None, True)] * 2  # the docs' configuration held
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_local_workers_keep_glibc_malloc_and_run_no_profiler(monkeypatch):
    """Dask's MALLOC_TRIM_THRESHOLD_ cost the archive 10 % of its rate, its profiler 2-3 %."""
    from distributed import Client

    from frameqc.runtime.archive.cluster import local_cluster

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # a cluster made before
    with local_cluster(1) as cluster, Client(cluster) as client:
        seen = client.run(lambda dask_worker: (os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                               os.environ.get("OMP_NUM_THREADS"),
                                               "profile" in dask_worker.periodic_callbacks))
    assert list(seen.values()) == [(None, "1", False)]


def test_nights():
    from frameqc.runtime.output.record import night_of

    assert night_of("2025-07-09T02:15:00.000") == "2025-07-08"
    assert night_of("2025-07-08T21:15:00") == "2025-07-08"
    assert night_of("2025-07-08") == "2025-07-08"
    assert night_of("yesterday") is None and night_of(None) is None


def test_without_the_dask_extra_it_says_how_to_get_it(tmp_path, runtime_model):
    guard = ("import sys\nclass No:\n    def find_spec(self, n, p=None, t=None):\n"
             "        if n.split('.')[0] in ('distributed', 'dask', 'pyarrow'):\n"
             "            raise ImportError(n)\nsys.meta_path.insert(0, No())\n"
             "from frameqc.runtime.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", guard, "archive", "--model",
                           str(runtime_model["int8"]), "-o", str(tmp_path / "o"), "x.fits"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("frameqc: archive needs the dask extra: "
                                   "pip install 'frameqc[dask]'")


def test_rows_are_readable_without_frameqc(runtime_model, archive_dir, tmp_path):
    out = tmp_path / "out"
    assert frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                   "--workers", "1", str(archive_dir / "20250709"),
                   timeout=300).returncode == 1  # zz_empty.fits
    code = ("import pyarrow.dataset as ds, sys\n"
            "t = ds.dataset(sys.argv[1]).to_table()\n"
            "print(t.num_rows, sorted(set(t.column('night').to_pylist()) - {None}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(out)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.stdout.split(maxsplit=1) == ["31", "['2025-07-09']\n"]
    shutil.rmtree(out)


# -- an in-process cluster: failures injected where a real one cannot be made on demand -----

@pytest.fixture(scope="module")
def inproc():
    """A scheduler and one worker thread in this process (monkeypatches reach the worker),
    on TCP so that a ``frameqc archive`` subprocess can use it too."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      host="127.0.0.1", dashboard_address=None, silence_logs=40) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    """Eight small frames, quick to classify."""
    root = tmp_path_factory.mktemp("small")
    for i in range(8):
        write_fits(root / f"s_{i}.fits", make_frame(("good", "shutter")[i % 2], 227, 100 + i))
    return root


def test_a_task_that_keeps_failing_is_one_line_and_the_rest_survives(
        runtime_model, small_dir, inproc, tmp_path, monkeypatch):
    import errno

    import pyarrow.parquet as pq

    write = pq.write_table

    def full_for_one_batch(table, where, *a, **kw):
        if str(small_dir / "s_4.fits") in table.column("path").to_pylist():
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(table, where, *a, **kw)

    monkeypatch.setattr(pq, "write_table", full_for_one_batch)
    out = tmp_path / "out"
    code, _, err = run_cli("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                           "--scheduler", inproc, "--batch", "2", str(small_dir))
    assert code == 1 and "Traceback" not in err
    failed = [line for line in err.splitlines() if "a task" in line]
    assert failed == ["frameqc archive: a task of 2 frames failed (No space left on device); "
                      "its frames are not in OUT, the other tasks go on"], err
    assert "2 frames lost in failed tasks" in err
    assert sorted(Path(r["path"]).name for r in rows(out)) == [
        f"s_{i}.fits" for i in (0, 1, 2, 3, 6, 7)]
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(pq, "write_table", write)  # the disk has room again
    code, _, err = run_cli("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                           "--scheduler", inproc, "--resume", str(small_dir))
    assert code == 0 and "6 already done" in err and "2 frames in" in err
    assert len(rows(out)) == 8


def test_parts_are_flushed_before_they_are_renamed(runtime_model, small_dir, inproc, tmp_path,
                                                   monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def spy_replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    out = tmp_path / "out"
    code, _, err = run_cli("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                           "--scheduler", inproc, "--batch", "4", str(small_dir))
    monkeypatch.undo()
    assert code == 0, err
    renames = [e for e in events if e[0] == "replace" and e[2].endswith(".parquet")]
    assert len(renames) == 2
    for e in renames:
        i = events.index(e)
        assert events[i - 1] == ("fsync", e[1])  # the data reached the disk first
        assert events[i + 1] == ("fsync", str(out))  # and then the rename did


def test_foreign_and_damaged_files_in_out_are_left_alone(runtime_model, small_dir, inproc,
                                                         tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    out.mkdir()
    pq.write_table(pa.table({"night": ["2025-07-08"], "frames": [412]}), out / "summary.parquet")
    first = tmp_path / "first"
    assert run_cli("archive", "--model", str(runtime_model["int8"]), "-o", str(first),
                   "--scheduler", inproc, str(small_dir / "s_0.fits"))[0] == 0
    whole = next(first.glob("part-*.parquet")).read_bytes()
    damaged = out / "part-20250101T000000-abcdef-0000000.parquet"
    damaged.write_bytes(whole[: len(whole) // 2])  # cut by a crash
    other = out / ".part-20250101T000000-fedcba-0000003.0123abcd.tmp"  # a concurrent run's
    other.write_bytes(b"being written")
    for resume in ((), ("--resume",)):
        code, _, err = run_cli("archive", "--model", str(runtime_model["int8"]), "-o",
                               str(out), "--scheduler", inproc, *resume, str(small_dir))
        assert code == 0 and "Traceback" not in err, err
        assert f"{damaged}: not a readable part" in err
    assert "8 already done" in err
    assert pq.read_table(out / "summary.parquet").num_rows == 1
    assert other.read_bytes() == b"being written" and damaged.exists()
    ours = pa_ds.dataset([str(p) for p in out.glob("part-*.parquet") if p != damaged])
    assert ours.count_rows() == 8


def test_fp32_and_int8_results_are_told_apart(runtime_model, small_dir, inproc, tmp_path):
    out = tmp_path / "out"
    argv = ("-o", str(out), "--scheduler", inproc, str(small_dir / "s_0.fits"),
            str(small_dir / "s_1.fits"))
    assert run_cli("archive", "--model", str(runtime_model["int8"]), *argv)[0] == 0
    code, _, err = run_cli("archive", "--model", str(runtime_model["fp32"]), *argv)
    assert code == 0, err  # the fp32 twin's results are not the int8 one's
    got = sorted((Path(r["path"]).name, r["precision"]) for r in rows(out))
    assert got == [("s_0.fits", "fp32"), ("s_0.fits", "int8"), ("s_1.fits", "fp32"),
                   ("s_1.fits", "int8")]
    code, _, err = run_cli("archive", "--model", str(runtime_model["fp32"]), *argv)
    assert code == 2 and "(fp32): add --resume" in err
    code, _, err = run_cli("archive", "--model", str(runtime_model["fp32"]), "--resume", *argv)
    assert code == 0 and "0 frames in" in err and "2 already done" in err


def test_resume_tries_failed_frames_again(runtime_model, small_dir, inproc, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(small_dir, frames)
    good = (frames / "s_3.fits").read_bytes()
    (frames / "s_3.fits").write_bytes(good[:2880])  # being copied when the run read it
    out = tmp_path / "out"
    argv = ("archive", "--model", str(runtime_model["int8"]), "-o", str(out), "--scheduler",
            inproc, "--batch", "3", str(frames))
    assert run_cli(*argv)[0] == 1
    (frames / "s_3.fits").write_bytes(good)  # the copy finished
    code, _, err = run_cli(*argv, "--resume")
    assert code == 0 and "1 frames in" in err and "7 already done" in err, err
    got = {Path(r["path"]).name: r for r in rows(out)}
    assert len(rows(out)) == 8 and got["s_3.fits"]["error"] is None  # one row per frame
    assert got["s_3.fits"]["label"] is not None


def test_a_list_on_a_pipe_streams(runtime_model, small_dir, inproc, tmp_path):
    """``@/dev/stdin`` from a pipe, progress on a terminal: the first task runs before the
    list ends, and every frame listed is done (a list read once to count it for the
    terminal's ETA would leave nothing to do)."""
    out = tmp_path / "out"
    paths = [f"{p}\n" for p in sorted(map(str, small_dir.glob("*.fits")))]
    tty, terminal = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "frameqc.runtime.cli", "archive", "--model",
                             str(runtime_model["int8"]), "-o", str(out), "--scheduler", inproc,
                             "--batch", "2", "@/dev/stdin"],
                            stdin=subprocess.PIPE, stderr=terminal, text=True)
    os.close(terminal)
    try:
        proc.stdin.write("".join(paths[:2]))
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(out.glob("part-*.parquet")), "nothing was done before the list ended"
        proc.stdin.write("".join(paths[2:]))
        proc.stdin.close()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(tty)
    assert sorted(r["path"] for r in rows(out)) == [p.strip() for p in paths]


def test_one_run_at_a_time_per_out(runtime_model, small_dir, inproc, tmp_path):
    """A second run on an OUT being written is refused in one line, naming the first;
    two would each take the other's frames for not done and do them twice."""
    from frameqc.runtime.archive.cluster import LOCK, holding

    out = tmp_path / "out"
    out.mkdir()
    argv = ("archive", "--model", str(runtime_model["int8"]), "-o", str(out), "--scheduler",
            inproc, str(small_dir / "s_0.fits"))
    with holding(out):  # as a run in another process holds it
        code, _, err = run_cli(*argv)
        assert code == 2 and not list(out.glob("part-*"))
        assert err.strip().splitlines() == [
            f"frameqc: {out} is being written by another frameqc archive run (pid "
            f"{os.getpid()} on {os.uname().nodename}); wait for it to end, or choose another "
            "folder"]
    code, _, err = run_cli(*argv)  # released with the run that held it, lock file left
    assert code == 0 and len(list(out.glob("part-*.parquet"))) == 1 and (out / LOCK).exists()


def test_a_file_system_without_locks_is_said_and_the_run_goes_on(tmp_path, monkeypatch):
    """NFS without lockd answers flock with ENOLCK: one line, not a traceback nor a refusal.
    (No such file system here: flock is made to fail as it does there.)"""
    import errno
    import io

    from frameqc.runtime.archive import cluster

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(cluster.fcntl, "flock", no_locks)
    err, ran = io.StringIO(), []
    with cluster.holding(tmp_path, err):
        ran.append(True)
    assert ran and err.getvalue() == (f"frameqc archive: cannot lock {tmp_path} (No locks "
                                      "available); a second run on it would not be refused\n")
