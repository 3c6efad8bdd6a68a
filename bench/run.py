"""frameqc's benchmark: the upstream torch one-shot against frameqc, on the same frames.

Measures, in one run on this machine: (a) the torch one-shot as the upstream classifier ran it, (b)
frameqc cold one-shots (fp32, int8), (c) resident one-shots through ``frameqc serve``,
(d) batch throughput over full-size frames, (e) the peak RSS of each, (f) the network's
FLOP rate against this machine's sgemm, and the per-stage time of one full-size frame.
Prints a table with the targets and writes everything as JSON.

    python bench/run.py                       # makes its own weights, models and frames
    python bench/run.py --weights W.pt --model M.onnx --frames 100 --repeat 5

(a) and the made-up weights need the export extra (torch); without torch, give --model
and (a) is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FRAMEQC = [sys.executable, "-c", "from frameqc.runtime.cli import entry; entry()"]
TARGETS = {
    "cold fp32 one-shot vs torch one-shot": (">=", 25.0),
    "cold fp32 one-shot / its floor": ("<=", 1.2),
    "cold int8 one-shot / its floor": ("<=", 1.2),
    "resident one-shot / its floor": ("<=", 1.2),
    "demo first run seconds": ("<=", 20.0),
    "demo first run peak RSS MB": ("<=", 1000.0),
    "cold int8 one-shot vs torch one-shot": (">=", 10.0),
    "resident one-shot vs torch one-shot": (">=", 50.0),
    "batch int8 frames/s": (">=", 10.0),
    "cold int8 one-shot peak RSS MB": ("<=", 400.0),
    "fp32 inference / sgemm rate": (">=", 0.70),
    "archive int8 frames/s / batch int8 frames/s": (">=", 0.90),
}
#: What an empty interpreter, one that imports what a cold one-shot imports (numpy and
#: onnxruntime: plain FITS frames are read without astropy), and astropy on top, cost.
FLOOR = {"python": [sys.executable, "-c", "pass"],
         "python + numpy + onnxruntime": [sys.executable, "-c", "import numpy, onnxruntime"],
         "... + astropy.io.fits (not needed)": [sys.executable, "-c",
                                                "import numpy, onnxruntime, astropy.io.fits"]}


def run_repeated(cmd: list[str], n: int, env: dict | None = None) -> dict:
    walls, peaks = [], []
    for _ in range(n):
        wall, peak = child_stats(cmd, env)
        walls.append(wall)
        peaks.append(peak)
    return summary(walls) | {"peak_rss_mb": round(max(peaks), 1)}


#: Runs a command as a child of this small process, so that the child's peak RSS is its
#: own and not the benchmark's (a child forked from a process holding torch inherits it).
LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - t0, "rss_mb": usage.ru_maxrss / 1024,
                  "code": os.waitstatus_to_exitcode(status)}), file=sys.stderr)
"""


def child_stats(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of ``cmd``."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, text=True)
    *errors, last = proc.stderr.strip().splitlines() or [""]
    stats = json.loads(last) if last.startswith("{") else {"code": proc.returncode}
    if stats["code"] != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {stats['code']}: "
                           f"{' '.join(errors)[-500:]}")
    return stats["wall"], stats["rss_mb"]


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"n": len(values), "median_s": round(statistics.median(values), 4),
            "p95_s": round(p95, 4), "min_s": round(ordered[0], 4)}


def make_weights(work: Path) -> Path:
    """A vgg16 + head state_dict with random weights (the real ones are not public)."""
    import torch

    from frameqc.export.network import build_vgg16

    path = work / "vgg16-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build_vgg16(2).state_dict(), path)
    return path


def make_frames(directory: Path, n: int) -> list[Path]:
    from frameqc.runtime.data.synthetic import KINDS, make_frame, write_fits

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = directory / f"frame_{i:03d}.fits"
        if not p.exists():
            write_fits(p, make_frame(KINDS[i % 3], 2048, 5000 + i))
        paths.append(p)
    return paths


def vgg16_macs(size: int = 224, n_classes: int = 2, hidden: int = 256) -> int:
    """Multiply-accumulates of one vgg16 + head inference."""
    from frameqc.runtime.model.vgg16_graph import CONFIG

    macs, c_in, s = 0, 3, size
    for v in CONFIG:
        if v == "M":
            s //= 2
        else:
            macs += s * s * c_in * v * 9
            c_in = v
    return macs + 25088 * 4096 + 4096 * 4096 + 4096 * hidden + hidden * n_classes


def sgemm_gflops(n: int = 4096, repeat: int = 3) -> float:
    """numpy's float32 matrix product (OpenBLAS, all usable cores): the reference rate."""
    a = np.random.default_rng(0).random((n, n), np.float32)
    b = np.random.default_rng(1).random((n, n), np.float32)
    a @ b
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times) / 1e9


def inference_rate(model_path: Path, batch: int, repeat: int) -> dict:
    from frameqc.runtime.model.session import Model

    model = Model(model_path)
    x = np.random.default_rng(0).random((batch, 3, 224, 224), np.float32)
    model.predict(x)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.predict(x)
        times.append((time.perf_counter() - t0) / batch)
    return {"batch": batch, "seconds_per_frame": round(statistics.median(times), 4),
            "gflops": round(2 * vgg16_macs() / statistics.median(times) / 1e9, 1)}


def stage_timings(model_path: Path, frames: list[Path]) -> dict:
    from frameqc.runtime.engine.pipeline import prepare
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import Model

    model = Model(model_path)
    stages: dict[str, list[float]] = {"read": [], "bin": [], "prepare": [], "infer": []}
    for f in frames:
        p = prepare(f, AsinhRecipe())
        t0 = time.perf_counter()
        model.predict(p.tensor[None])
        p.timings["infer"] = time.perf_counter() - t0
        for k in stages:
            stages[k].append(p.timings[k])
    return {k: round(statistics.median(v), 4) for k, v in stages.items()}


class Server:
    def __init__(self, model: Path, sock: Path) -> None:
        self.proc = subprocess.Popen([*FRAMEQC, "serve", "--model", str(model), "--socket",
                                      str(sock)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        env = {"FRAMEQC_SOCKET": str(sock)}
        for _ in range(600):
            if subprocess.run([*FRAMEQC, "status"], env={**os.environ, **env},
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(text.split("VmHWM:")[1].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def bench(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    have_torch = _has_torch()
    weights = Path(args.weights) if args.weights else (make_weights(work) if have_torch else None)
    model = Path(args.model) if args.model else work / "model.onnx"
    int8 = model.with_name(model.name[:-5] + ".int8.onnx")
    if not model.exists() or not int8.exists():
        if weights is None:
            raise SystemExit("give --model M.onnx (with M.int8.onnx beside it) or install torch")
        print(f"exporting {weights} -> {model} (+ int8), once", file=sys.stderr)
        subprocess.run([*FRAMEQC, "export", str(weights), "--labels", "Shutter,OK",
                        "--alert", "Shutter", "-o", str(model), "--int8"], check=True,
                       stdout=subprocess.DEVNULL)
    frames = make_frames(work / "frames", args.frames)
    frame = frames[0]
    nosock = {"FRAMEQC_SOCKET": str(work / "no-server.sock")}
    r: dict = {"machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                           "python": platform.python_version(), "platform": platform.platform(),
                           "install": as_installed()},
               "frames": len(frames), "repeat": args.repeat}

    if weights is not None and have_torch:
        binned = work / "frame_000_bin9.fits"
        subprocess.run([*FRAMEQC, "bin", "-b", "9", "--overwrite", "-o", str(work), str(frame)],
                       check=True, stdout=subprocess.DEVNULL)
        print("(a) torch one-shot", file=sys.stderr)
        r["torch_oneshot"] = run_repeated([sys.executable, str(HERE / "upstream_oneshot.py"),
                                           str(weights), "2", str(binned)], args.repeat)
    os.environ["FRAMEQC_CACHE"] = str(work / "cache")  # the graph cache, for every child
    for name, m in (("fp32", model), ("int8", int8)):
        print(f"(b) cold one-shot {name}", file=sys.stderr)
        shutil.rmtree(work / "cache" / "graphs", ignore_errors=True)
        oneshot = [*FRAMEQC, "classify", "--model", str(m), str(frame)]
        r[f"first_{name}"] = run_repeated(oneshot, 1, nosock)  # optimises, saves the graph
        r[f"cold_{name}"] = run_repeated(oneshot, args.repeat, nosock)
        r[f"floor_{name}"] = floor(m, frames[:20], args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        sock = Path(tmp) / "bench.sock"
        for name, m in (("int8", int8), ("fp32", model)):
            print(f"(c) resident one-shots {name}", file=sys.stderr)
            server = Server(m, sock)
            try:
                env = {"FRAMEQC_SOCKET": str(sock)}
                res = run_repeated([*FRAMEQC, "classify", "--model", str(m), str(frame)],
                                   args.resident, env)
                res["server_peak_rss_mb"] = round(server.rss_mb(), 1)
                res["server_s"] = server_seconds(m, frame, args.resident, env)
                res["floor"] = run_repeated([sys.executable, str(HERE / "floor_client.py"),
                                             str(frame)], args.resident, env)
                r[f"resident_{name}"] = res
            finally:
                server.stop()
    for name, m in (("int8", int8), ("fp32", model)):
        print(f"(d) batch {name} over {len(frames)} frames", file=sys.stderr)
        wall, peak = child_stats([*FRAMEQC, "classify", "--model", str(m), "--format", "csv",
                                  str(work / "frames")], nosock)
        r[f"batch_{name}"] = {"frames": len(frames), "seconds": round(wall, 2),
                              "frames_per_s": round(len(frames) / wall, 2),
                              "peak_rss_mb": round(peak, 1)}
    if args.docker_image:
        print("(c') resident one-shots through docker exec, int8", file=sys.stderr)
        r["docker_int8"] = docker_oneshots(args.docker_image, int8, frame, args.resident)
    if _has_dask():
        print(f"(e) archive int8 over {len(frames)} frames on a LocalCluster", file=sys.stderr)
        r["archive_int8"] = archive_rate(int8, work / "frames", len(frames))
    print("(g) the floor: an interpreter and the one-shot's imports", file=sys.stderr)
    r["floor"] = {k: run_repeated(cmd, args.repeat) for k, cmd in FLOOR.items()}
    if not args.no_demo:
        print("(h) the demo, first run and second", file=sys.stderr)
        r["demo"] = demo_runs()
    print("(f) FLOP rate and stages", file=sys.stderr)
    r["sgemm_gflops"] = round(sgemm_gflops(), 1)
    r["fp32_inference"] = inference_rate(model, 8, args.repeat)
    r["fp32_inference_batch1"] = inference_rate(model, 1, args.repeat)
    r["int8_inference_batch1"] = inference_rate(int8, 1, args.repeat)
    r["vgg16_gmacs"] = round(vgg16_macs() / 1e9, 2)
    r["stages_fp32_2048"] = stage_timings(model, frames[:20])
    return r


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _has_dask() -> bool:
    import importlib.util

    return importlib.util.find_spec("distributed") is not None


def floor(model: Path, frames: list[Path], repeat: int) -> dict:
    """A cold one-shot's floor: bench/floor.py's child (interpreter, imports, a session from
    the cached optimised graph, one inference) plus reading, binning and preparing a frame
    (medians in this process)."""
    from frameqc.runtime.engine.pipeline import prepare
    from frameqc.runtime.model import graphcache
    from frameqc.runtime.model.cpu import available_cpus
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.recipes import AsinhRecipe
    from frameqc.runtime.model.session import want_prepack

    graph = graphcache.lookup(graphcache.key(os.path.realpath(model)))
    if graph is None:
        raise RuntimeError(f"no cached graph for {model}: the first one-shot saves it")
    prepack = want_prepack(read_card(os.path.realpath(model)).precision)
    child = run_repeated([sys.executable, str(HERE / "floor.py"), str(graph),
                          str(available_cpus()), "1" if prepack else "0"], repeat)
    steps = []
    for f in frames:
        p = prepare(f, AsinhRecipe())
        steps.append(sum(p.timings.values()))
    prep = statistics.median(steps)
    return {"child_s": child["median_s"], "prepare_s": round(prep, 4),
            "median_s": round(child["median_s"] + prep, 4), "prepack": prepack}


def as_installed() -> dict:
    """frameqc as ``pip install`` leaves it: its modules compiled to bytecode.

    ``pip install .`` compiles every module; an editable install (or
    ``PYTHONDONTWRITEBYTECODE``) leaves them to be compiled from source by every process,
    which costs a cold one-shot about 25 ms. The benchmark compiles them first, as an
    install does, and says whether the install is editable (its import hook costs every
    start about 11 ms more: measure a normal install).
    """
    import compileall
    import importlib.metadata
    import importlib.util

    direct = importlib.metadata.distribution("frameqc").read_text("direct_url.json") or "{}"
    editable = json.loads(direct).get("dir_info", {}).get("editable", False)
    for name in ("frameqc.runtime", "frameqc.export"):
        spec = importlib.util.find_spec(name)
        for folder in spec.submodule_search_locations if spec else ():
            compileall.compile_dir(folder, quiet=1)
    if editable:
        print("note: frameqc is installed editable; a normal install starts ~11 ms faster",
              file=sys.stderr)
    return {"editable": editable, "bytecode": "compiled"}


def server_seconds(model: Path, frame: Path, n: int, env: dict) -> float:
    """The server's own seconds for one frame (read, bin, prepare, infer), median of n."""
    seconds = []
    for _ in range(n):
        out = subprocess.run([*FRAMEQC, "classify", "--model", str(model), "--format", "json",
                              str(frame)], env={**os.environ, **env}, capture_output=True,
                             text=True, check=True).stdout
        seconds.append(json.loads(out)["seconds"])
    return round(statistics.median(seconds), 4)


def demo_runs() -> dict:
    """``frameqc demo`` in a new folder: the first run builds the model, the second reuses it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*FRAMEQC, "demo", "--dir", str(Path(tmp) / "demo")]
        first = child_stats(cmd)
        second = child_stats(cmd)
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return {"first_s": round(first[0], 2), "first_peak_rss_mb": round(first[1], 1),
            "second_s": round(second[0], 2), "second_peak_rss_mb": round(second[1], 1),
            "disk_mb": round(size / 2**20, 1)}


def docker_oneshots(image: str, model: Path, frame: Path, n: int) -> dict:
    """The operators' path: ``docker exec`` of a one-shot answered by the container's server.

    The container runs the image's default command (``frameqc serve``) with the model and
    the frame's folder mounted, as docs/deployment.md starts it.
    """
    name = f"frameqc-bench-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--name", name, "-v", f"{model.parent}:/models:ro",
                    "-v", f"{frame.parent}:/data/incoming:ro", "-e",
                    f"FRAMEQC_MODEL=/models/{model.name}", image], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if subprocess.run(["docker", "exec", name, "frameqc", "status"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the container's server did not start")
        walls, bare = [], []
        for _ in range(n):
            walls.append(child_stats(["docker", "exec", name, "frameqc", "classify",
                                      f"/data/incoming/{frame.name}"])[0])
            bare.append(child_stats(["docker", "exec", name, "python", "-c", "pass"])[0])
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    return summary(walls) | {"docker_exec_python": summary(bare)}


def archive_rate(model: Path, frames: Path, n: int) -> dict:
    """``frameqc archive`` on the batch's frames: whole wall time, and without start-up."""
    from frameqc.runtime.archive.cluster import archive

    with tempfile.TemporaryDirectory() as out:
        s = archive(model, out, [str(frames)])
    return {"frames": s.frames, "seconds": round(s.seconds, 2),
            "startup_s": round(s.startup, 2), "frames_per_s": round(s.frames / s.seconds, 2),
            "steady_frames_per_s": round(s.frames / (s.seconds - s.startup), 2)}


def report(r: dict) -> str:
    rows = []
    torch_s = r.get("torch_oneshot", {}).get("median_s")

    def ratio(s: float) -> str:
        return f"{torch_s / s:.1f}x" if torch_s else "-"

    def row(what: str, s: float | None, rss: float | None, note: str = "") -> None:
        rows.append((what, f"{s:.3f}" if s is not None else "-", ratio(s) if s else "-",
                     f"{rss:.0f}" if rss else "-", note))

    if torch_s:
        row("torch one-shot (upstream, pre-binned frame)", torch_s,
            r["torch_oneshot"]["peak_rss_mb"])
    python_s = r["floor"]["python"]["median_s"]
    for k in ("fp32", "int8"):
        c, f = r[f"cold_{k}"], r[f"floor_{k}"]
        row(f"frameqc cold one-shot {k} (2048x2048)", c["median_s"], c["peak_rss_mb"],
            f"p95 {c['p95_s']:.3f}; {c['median_s'] / f['median_s']:.2f}x its floor")
        row(f"  its floor (imports, cached graph, infer; prepare {f['prepare_s']:.3f})",
            f["median_s"], None)
        first = r[f"first_{k}"]
        row("  first on this machine (optimises and caches the graph)", first["median_s"],
            first["peak_rss_mb"])
    for k in ("int8", "fp32"):
        c = r[f"resident_{k}"]
        floor_s = c["floor"]["median_s"]
        bare = python_s + c["server_s"]
        row(f"frameqc resident one-shot {k}", c["median_s"], c["peak_rss_mb"],
            f"p95 {c['p95_s']:.3f}; server {c['server_peak_rss_mb']:.0f} MB; "
            f"{c['median_s'] / floor_s:.2f}x its floor, {c['median_s'] / bare:.2f}x python "
            "+ server's")
        row("  its floor (bench/floor_client.py, same server)", floor_s, c["floor"]["peak_rss_mb"],
            f"p95 {c['floor']['p95_s']:.3f}; python {python_s:.3f} + server's "
            f"{c['server_s']:.3f} = {bare:.3f}")
    if "docker_int8" in r:
        d = r["docker_int8"]
        row("frameqc resident one-shot int8 via docker exec", d["median_s"], None,
            f"p95 {d['p95_s']:.3f}")
        row("  docker exec of an empty interpreter, same container",
            d["docker_exec_python"]["median_s"], None,
            f"p95 {d['docker_exec_python']['p95_s']:.3f}")
    for k in ("int8", "fp32"):
        b = r[f"batch_{k}"]
        row(f"frameqc batch {k}, {b['frames']} frames", b["seconds"] / b["frames"],
            b["peak_rss_mb"], f"{b['frames_per_s']:.1f} frames/s")
    if "archive_int8" in r:
        a = r["archive_int8"]
        row(f"frameqc archive int8, {a['frames']} frames (2 workers)",
            a["seconds"] / a["frames"], None,
            f"{a['frames_per_s']:.1f} frames/s; {a['steady_frames_per_s']:.1f}/s after "
            f"{a['startup_s']:.1f} s start-up")
    for k, f in r["floor"].items():
        row(f"floor: {k}", f["median_s"], f["peak_rss_mb"], f"p95 {f['p95_s']:.3f}")
    w = max(len(x[0]) for x in rows)
    out = [f"{'':<{w}}  {'seconds':>8}  {'speed-up':>8}  {'peak MB':>7}  notes"]
    out += [f"{a:<{w}}  {b:>8}  {c:>8}  {d:>7}  {e}" for a, b, c, d, e in rows]
    inf = r["fp32_inference"]
    out.append("")
    out.append(f"fp32 inference {inf['seconds_per_frame']:.3f} s/frame (batch 8) = "
               f"{inf['gflops']:.0f} GFLOP/s; sgemm {r['sgemm_gflops']:.0f} GFLOP/s "
               f"-> {inf['gflops'] / r['sgemm_gflops']:.0%} of the machine's rate "
               f"(vgg16: {r['vgg16_gmacs']} GMAC/frame)")
    out.append(f"batch 1: fp32 {r['fp32_inference_batch1']['seconds_per_frame']:.3f} s, "
               f"int8 {r['int8_inference_batch1']['seconds_per_frame']:.3f} s")
    if "demo" in r:
        d = r["demo"]
        out.append(f"demo: first run {d['first_s']:.1f} s, peak {d['first_peak_rss_mb']:.0f} MB; "
                   f"second {d['second_s']:.1f} s, peak {d['second_peak_rss_mb']:.0f} MB; "
                   f"{d['disk_mb']:.0f} MB on disk")
    st = r["stages_fp32_2048"]
    out.append("one 2048x2048 frame, median stages: " +
               ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in st.items()))
    checks = {
        "cold fp32 one-shot vs torch one-shot":
            torch_s / r["cold_fp32"]["median_s"] if torch_s else None,
        "cold int8 one-shot vs torch one-shot":
            torch_s / r["cold_int8"]["median_s"] if torch_s else None,
        "resident one-shot vs torch one-shot":
            torch_s / r["resident_int8"]["median_s"] if torch_s else None,
        "batch int8 frames/s": r["batch_int8"]["frames_per_s"],
        "cold int8 one-shot peak RSS MB": r["cold_int8"]["peak_rss_mb"],
        "cold fp32 one-shot / its floor": r["cold_fp32"]["median_s"] / r["floor_fp32"]["median_s"],
        "cold int8 one-shot / its floor": r["cold_int8"]["median_s"] / r["floor_int8"]["median_s"],
        "resident one-shot / its floor":
            r["resident_int8"]["median_s"] / r["resident_int8"]["floor"]["median_s"],
        "demo first run seconds": r["demo"]["first_s"] if "demo" in r else None,
        "demo first run peak RSS MB": r["demo"]["first_peak_rss_mb"] if "demo" in r else None,
        "fp32 inference / sgemm rate": inf["gflops"] / r["sgemm_gflops"],
        "archive int8 frames/s / batch int8 frames/s":
            r["archive_int8"]["steady_frames_per_s"] / r["batch_int8"]["frames_per_s"]
            if "archive_int8" in r else None,
    }
    out.append("")
    for name, value in checks.items():
        op, goal = TARGETS[name]
        ok = value is not None and (value >= goal if op == ">=" else value <= goal)
        shown = "-" if value is None else f"{value:.2f}"
        out.append(f"target {name} {op} {goal:g}: {shown}  {'met' if ok else 'NOT MET'}")
    r["targets"] = checks
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="state_dict for the torch one-shot (default: made up)")
    p.add_argument("--model", help="fp32 model; its .int8.onnx beside it (default: exported)")
    p.add_argument("--frames", type=int, default=100, help="full-size frames for the batch")
    p.add_argument("--repeat", type=int, default=5, help="runs of each one-shot")
    p.add_argument("--resident", type=int, default=20, help="resident one-shots")
    p.add_argument("--work", default=str(Path.home() / ".cache" / "frameqc" / "bench"),
                   help="where weights, models and frames are kept between runs")
    p.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    p.add_argument("--no-demo", action="store_true", help="leave out the demo's runs")
    p.add_argument("--docker-image", metavar="IMAGE",
                   help="also time docker exec one-shots answered by IMAGE's server")
    p.add_argument("--sizes", action="store_true",
                   help="also the wobble classifier at 224, 512 and 1024 px (bench/sizes.py)")
    args = p.parse_args()
    r = bench(args)
    text = report(r)
    print(text)
    if args.sizes:
        from sizes import sizes_bench, sizes_report

        r["sizes"] = sizes_bench(Path(args.work) / "sizes")
        print("\n" + sizes_report(r["sizes"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2) + "\n")
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
