"""``frameqc archive`` on real Dask clusters: local processes, a killed worker, resume,
and an external scheduler with its workers started as a cluster user would."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from frameqc.runtime.data.synthetic import make_frame, write_fits

from conftest import run_cli

pytest.importorskip("distributed", reason="the dask extra is part of the test install")
pa_ds = pytest.importorskip("pyarrow.dataset")

BIN = Path(sys.executable).parent


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


def frameqc(*argv, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", *argv],
                          capture_output=True, text=True, timeout=timeout, **kw)


def rows(out: Path) -> list[dict]:
    return pa_ds.dataset(str(out), format="parquet").to_table().to_pylist()


def classify_json(model: Path, paths: list[str]) -> dict[str, dict]:
    _, out, _ = run_cli("classify", "--model", str(model), "--format", "json", *paths)
    return {r["path"]: r for r in map(json.loads, out.splitlines())}


def test_local_cluster_rows_are_classify_decisions(runtime_model, archive_dir, tmp_path):
    out = tmp_path / "out"
    proc = frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                   "--workers", "2", "--batch", "8", str(archive_dir))
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
                   str(archive_dir))
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
                   "--workers", "2", "--resume", f"@{listing}")
    assert proc.returncode == 1, proc.stderr  # the broken frames come last in the list
    assert f"{len(before)} already done, skipped" in proc.stderr
    assert f"{62 - len(before)} frames" in proc.stderr
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == 62


def test_external_scheduler_and_workers(runtime_model, archive_dir, tmp_path):
    info = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", "2",
                                       "--nthreads", "1", "--no-dashboard"],
                                      stderr=subprocess.DEVNULL))
        out = tmp_path / "out"
        proc = frameqc("archive", "--model", str(runtime_model["int8"]), "-o", str(out),
                       "--scheduler", address, str(archive_dir / "20250708"))
        assert proc.returncode == 1, proc.stderr  # its broken frame
        assert len(rows(out)) == 31 and "31 frames" in proc.stderr
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_sources_stream_and_nights():
    from frameqc.runtime.archive.cluster import iter_sources
    from frameqc.runtime.output.record import night_of

    assert night_of("2025-07-09T02:15:00.000") == "2025-07-08"
    assert night_of("2025-07-08T21:15:00") == "2025-07-08"
    assert night_of("2025-07-08") == "2025-07-08"
    assert night_of("yesterday") is None and night_of(None) is None
    it = iter_sources(["@/dev/stdin"])  # nothing is read until asked for
    assert hasattr(it, "__next__")


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
                   "--workers", "1", str(archive_dir / "20250709")).returncode == 1  # zz_empty.fits
    code = ("import pyarrow.dataset as ds, sys\n"
            "t = ds.dataset(sys.argv[1]).to_table()\n"
            "print(t.num_rows, sorted(set(t.column('night').to_pylist()) - {None}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", code, str(out)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.stdout.split(maxsplit=1) == ["31", "['2025-07-09']\n"]
    shutil.rmtree(out)
