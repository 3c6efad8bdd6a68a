"""What the InfluxDB sink costs: watch and serve throughput with it off, on, and InfluxDB down.

    python bench/sink_bench.py                     # makes a torch-free model and frames
    python bench/sink_bench.py --model M.onnx --frames 200 --repeat 5

watch: one in-process ``Watcher.scan()`` over the folder (a fresh state each time);
serve: one ``classify`` request of every frame to a ``frameqc serve`` subprocess. Each
configuration runs ``--repeat`` times, interleaved; the median is printed. "on" writes to a
real ``influxd`` started here (its config and data in a temporary folder); "down" points at
a port nobody listens on, so every batch goes to the spool. The frames are pre-binned
227x227, the fastest decisions, so the sink's share is as large as it can be. The target:
the sink costs < 5 % of the CPU time per frame (measured for the whole process, the
sender's thread included; wall-clock frames/s is printed too, but on a shared machine it
swings more than 5 % by itself). The load (``uptime``) is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from influx import DB, Influx, free_port  # the tests' influxd, started the same way

TARGET = 0.05
_CLASSIFIERS: dict = {}  # one loaded model for every watch run
_IDLE: dict[int, float] = {}


def make_model(work: Path) -> Path:
    from frameqc.export.calibration import synthetic_tensors
    from frameqc.export.onnx_export import quantize_int8
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    card = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",),
                     weights_sha256="0123456789ab" * 5, weights_name="random vgg16 (bench)")
    out = work / "model.onnx"
    install_model(stage_model(build_graph(random_params(2, seed=3),
                                          metadata=card.to_metadata()), out), out)
    frames = synthetic_tensors(AsinhRecipe(), 6)
    int8, _ = quantize_int8(out, card, frames[:4], frames[4:], min_agreement=0.0)
    return Path(int8)


def make_frames(folder: Path, n: int) -> None:
    from frameqc.runtime.data.synthetic import make_frame, write_fits

    folder.mkdir(parents=True, exist_ok=True)
    t = time.time() - 60
    for i in range(n):
        path = folder / f"f{i:05d}.fits"
        write_fits(path, make_frame(("good", "shutter", "wobble")[i % 3], 227, i),
                   **{"DATE-OBS": f"2026-07-08T22:{i // 60 % 60:02d}:{i % 60:02d}.{i:06d}"})
        os.utime(path, (t, t))


def watch_once(model_path: Path, folder: Path, work: Path, url: str | None
               ) -> tuple[float, float]:
    """One scan of the folder: frames per second, and CPU ms per frame (every thread of
    this process, the sender's included, until it has delivered)."""
    import io

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.output.destinations import Destinations
    from frameqc.runtime.senders.influx import InfluxSender
    from frameqc.runtime.serving.watch import Watcher

    clf = _CLASSIFIERS.get(model_path) or Classifier.load(model_path)
    _CLASSIFIERS[model_path] = clf
    state = Path(tempfile.mkdtemp(dir=work)) / "state"
    destinations = Destinations("json", out=io.StringIO(), err=sys.stderr)
    destinations.start(clf.labels)
    sender = InfluxSender(url, Path(f"{state}.influx-spool"), err=io.StringIO()) if url \
        else None
    if sender:
        destinations.senders.append(sender)
    watcher = Watcher(clf, folder, state, destinations, settle=0.0)
    cpu, start = time.process_time(), time.perf_counter()
    n = watcher.scan()
    took = time.perf_counter() - start
    if sender:
        sender.close()
    return n / took, 1000 * (time.process_time() - cpu) / n


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_once(model_path: Path, folder: Path, work: Path, url: str | None
               ) -> tuple[float, float]:
    """One request of every frame to a fresh ``frameqc serve``: frames per second, and the
    server's CPU ms per frame (until its sender is idle again)."""
    from frameqc.runtime.errors import UsageError
    from frameqc.runtime.serving.client import connect

    sock = Path(tempfile.mkdtemp(dir=work)) / "s.sock"
    extra = ["--influx", url] if url else []
    proc = subprocess.Popen([sys.executable, "-m", "frameqc.runtime.cli", "serve", "--model",
                             str(model_path), "--socket", str(sock), "--log",
                             str(sock.with_suffix(".log")), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if sock.exists():
                try:
                    conn = connect(str(sock), None)
                    break
                except UsageError:  # not listening yet
                    pass
            time.sleep(0.1)
        paths = [str(p) for p in sorted(folder.iterdir())]
        cpu, start = _cpu_seconds(proc.pid), time.perf_counter()
        n = sum(1 for _ in conn.classify(paths, None, None))
        took = time.perf_counter() - start
        time.sleep(1.5)  # the last batch leaves within a second
        cpu = _cpu_seconds(proc.pid) - cpu - 1.5 * _idle_cpu(proc.pid)
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return n / took, 1000 * cpu / n


def _idle_cpu(pid: int) -> float:
    """CPU seconds per second the server spends idle (polling loops), to subtract."""
    if pid not in _IDLE:
        before = _cpu_seconds(pid)
        time.sleep(2.0)
        _IDLE[pid] = (_cpu_seconds(pid) - before) / 2.0
    return _IDLE[pid]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="an int8 model (default: a made-up one)")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        os.environ["FRAMEQC_THREADS"] = str(args.threads)
    print(f"load before: {uptime()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="frameqc-sink-bench-") as tmp:
        work = Path(tmp)
        model = args.model or make_model(work)
        folder = work / "frames"
        make_frames(folder, args.frames)
        (work / "influx").mkdir()
        influxd = Influx(work / "influx")
        influxd.start()
        influxd.query(f'CREATE DATABASE "{DB}"', db=None)
        down = f"http://127.0.0.1:{free_port()}/write?db={DB}"
        configs = {"off": None, "on": influxd.write_url, "down": down}
        results: dict[tuple[str, str], list[float]] = {}
        try:
            for mode, run in (("watch", watch_once), ("serve", serve_once)):
                run(model, folder, work, None)  # warm: page cache, first session
                for _ in range(args.repeat):
                    for name, target in configs.items():
                        results.setdefault((mode, name), []).append(
                            run(model, folder, work, target))
            points = influxd.query('SELECT count("probability") FROM "frameqc"')
        finally:
            influxd.stop()
    sent = points[0]["values"][0][1]
    print(f"{args.frames} frames (227x227, int8), median of {args.repeat}")
    print(f"{'':8}{'':14}{'off':>9}{'on':>9}{'down':>9}{'on cost':>10}{'down cost':>11}")
    ok = True
    for mode in ("watch", "serve"):
        for i, (what, higher) in enumerate((("frames/s", True), ("CPU ms/frame", False))):
            med = {name: statistics.median(r[i] for r in results[(mode, name)])
                   for name in configs}
            cost = {name: (1 - med[name] / med["off"]) if higher else
                    (med[name] / med["off"] - 1) for name in ("on", "down")}
            if not higher:
                ok &= cost["on"] < TARGET
            print(f"{mode:8}{what:14}{med['off']:9.2f}{med['on']:9.2f}{med['down']:9.2f}"
                  f"{cost['on']:10.1%}{cost['down']:11.1%}")
    print(f"points in InfluxDB: {sent} (distinct DATE-OBS: {args.frames}; every run rewrites "
          "the same points)")
    print(f"target: the sink costs < {TARGET:.0%} of the CPU per frame: "
          f"{'met' if ok else 'NOT met'} (wall-clock frames/s on a loaded machine is noise)")
    print(f"load after: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
