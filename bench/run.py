"""frameqc's benchmark: the upstream torch one-shot against frameqc, on the same frames.

Measures, in one run on this machine: (i) inference alone, every model file (fp32, int8,
and bf16 where this machine can check it) on every engine that may run it, (a) the torch
one-shot as the upstream classifier ran it, (b) frameqc cold one-shots of each model file
and their floors, (c) resident one-shots through ``frameqc serve`` of each, (d) batches of
each over pre-binned and full-size frames, (e) the archive, the peak RSS of each, (f) the
network's FLOP rate against this machine's sgemm and the per-stage time of one full-size
frame. Prints one table and the targets, each a ratio of figures of the same run, and
writes everything as JSON; ``--hold`` (CI) exits 1 when a held target is missed.

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
#: The targets, each a ratio to something measured in the same run (a floor, the best
#: engine's raw rate, the upstream one-shot), so that they hold on any machine: name ->
#: (comparison, goal, held). ``--hold`` (CI) fails the run when a held target is missed;
#: held ones compare the best of their repeats (a loaded machine slows single samples, not
#: the best of several), the others the medians. Not held: those the smoke run's few
#: frames cannot judge (memory of a 12-frame batch) and those it does not measure (the
#: demo, the upstream torch one-shot without its weights). The archive is judged past its
#: fixed costs, on the smoke run's frames cycled (:func:`archive_rate`).
TARGETS = {
    "cold fp32 one-shot / its floor": ("<=", 1.2, True),
    "cold int8 one-shot / its floor": ("<=", 1.2, True),
    "resident one-shot / its floor (fastest engine)": ("<=", 1.2, True),
    "batch on pre-binned frames / the best engine's raw rate": (">=", 0.8, True),
    "archive / batch rate (same cores)": (">=", 0.9, True),
    "cold int8 one-shot peak RSS / its floor's": ("<=", 1.5, False),
    "fp32 inference / sgemm rate": (">=", 0.70, False),
    "cold fp32 one-shot vs torch one-shot": (">=", 25.0, False),
    "cold int8 one-shot vs torch one-shot": (">=", 10.0, False),
    "resident one-shot vs torch one-shot": (">=", 50.0, False),
    "demo first run seconds": ("<=", 20.0, False),
    "demo first run peak RSS MB": ("<=", 1000.0, False),
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


def timed(f, repeat: int) -> float:
    """Median seconds of ``f()`` after one warm-up call."""
    f()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def engine_rates(files: dict[str, Path], repeat: int) -> dict:
    """Inference only: every model file on every engine that can run it here, through
    frameqc's own session owner (batches run as frameqc runs them), with |dp| against
    fp32 on onnxruntime on the same random frames."""
    from frameqc.runtime.model.engines import candidates
    from frameqc.runtime.model.engines.cpuflags import cpu_flags
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.model.session import Model

    x = np.random.default_rng(0).random((8, 3, 224, 224), np.float32)
    out, ref = {}, None
    for precision, path in files.items():
        for engine in candidates(read_card(path), cpu_flags()):
            model = Model(path, engine=engine)
            p = model.predict(x)
            ref = p if ref is None else ref  # fp32 on onnxruntime comes first
            b8 = timed(lambda m=model: m.predict(x), repeat) / 8
            b1 = timed(lambda m=model: m.predict(x[:1]), repeat)
            out[f"{precision} on {engine}"] = {
                "precision": precision, "engine": engine, "batch8_s": round(b8, 4),
                "batch1_s": round(b1, 4), "frames_per_s": round(1 / b8, 2),
                "gflops": round(2 * vgg16_macs() / b8 / 1e9, 1),
                "max_dp": float(np.abs(p - ref).max()), "whole_batches": model.whole_batches}
            del model
    return out


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
        self.sock = sock
        for _ in range(120):  # each look is a process: looking often loads the server's start
            if subprocess.run([*FRAMEQC, "status"], env={**os.environ, **env},
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError("server did not start")

    def engine(self) -> str:
        out = subprocess.run([*FRAMEQC, "status", "--json"], capture_output=True, text=True,
                             env={**os.environ, "FRAMEQC_SOCKET": str(self.sock)})
        return json.loads(out.stdout).get("engine", "?") if out.returncode == 0 else "?"

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(text.split("VmHWM:")[1].split()[0]) / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def model_files(model: Path) -> dict[str, Path]:
    """The model's files by precision: fp32, its int8 twin, its bf16 twin when there is one."""
    stem = model.name[:-5]
    files = {"fp32": model, "int8": model.with_name(stem + ".int8.onnx")}
    if model.with_name(stem + ".bf16.onnx").exists():
        files["bf16"] = model.with_name(stem + ".bf16.onnx")
    return files


def can_bf16() -> bool:
    from frameqc.runtime.model.engines import installed
    from frameqc.runtime.model.engines.cpuflags import cpu_flags, has_bf16

    return installed("openvino") and has_bf16(cpu_flags())


def make_models(model: Path, weights: Path | None) -> None:
    """Export fp32 + int8 (+ bf16 where this machine can check it) once."""
    stem = model.name[:-5]
    bf16 = model.with_name(stem + ".bf16.onnx")
    if not model.exists() or not model.with_name(stem + ".int8.onnx").exists():
        if weights is None:
            raise SystemExit("give --model M.onnx (with M.int8.onnx beside it) or install torch")
        print(f"exporting {weights} -> {model} (+ int8, bf16), once", file=sys.stderr)
        subprocess.run([*FRAMEQC, "export", str(weights), "--labels", "Shutter,OK",
                        "--alert", "Shutter", "-o", str(model), "--int8",
                        *(["--bf16"] if can_bf16() else [])], check=True,
                       stdout=subprocess.DEVNULL)
    elif can_bf16() and not bf16.exists():
        from frameqc.export.calibration import synthetic_tensors
        from frameqc.export.onnx_export import make_bf16
        from frameqc.runtime.model.peek import read_card
        from frameqc.runtime.model.recipes import AsinhRecipe

        make_bf16(model, read_card(model), synthetic_tensors(AsinhRecipe(), 64, 32))


def make_prebinned(directory: Path, n: int) -> Path:
    """``n`` frames as the telescope's pipeline may already bin them: 227x227 FITS."""
    from frameqc.runtime.data.synthetic import KINDS, make_frame, write_fits

    directory.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = directory / f"binned_{i:03d}.fits"
        if not p.exists():
            write_fits(p, make_frame(KINDS[i % 3], 227, 7000 + i))
    return directory


def batch_rate(model: Path, folder: Path, repeat: int, env: dict) -> dict:
    """``frameqc classify`` over a folder: whole runs, and the rate once started (the
    run over all frames less the run over its first frame, best of ``repeat``)."""
    frames = sorted(folder.iterdir())
    cmd = [*FRAMEQC, "classify", "--model", str(model), "--format", "csv"]
    walls, peaks, ones = [], [], []
    for _ in range(repeat):
        wall, peak = child_stats([*cmd, str(folder)], env)
        walls.append(wall)
        peaks.append(peak)
        ones.append(child_stats([*cmd, str(frames[0]), str(frames[0])], env)[0])
    n = len(frames)
    return {"frames": n, "seconds": round(min(walls), 2),
            "frames_per_s": round(n / min(walls), 2),
            "steady_frames_per_s": round((n - 2) / max(1e-3, min(walls) - min(ones)), 2),
            "peak_rss_mb": round(max(peaks), 1)}


def resident(model: Path, frame: Path, n: int, sock: Path) -> dict:
    """One-shots answered by a ``frameqc serve`` of ``model`` (its engine chosen as a
    server chooses it), against the light client's floor on the same server."""
    server = Server(model, sock)
    try:
        env = {"FRAMEQC_SOCKET": str(sock)}
        res = run_repeated([*FRAMEQC, "classify", "--model", str(model), str(frame)], n, env)
        res["server_peak_rss_mb"] = round(server.rss_mb(), 1)
        res["server_s"] = server_seconds(model, frame, n, env)
        res["engine"] = server.engine()
        res["floor"] = run_repeated([sys.executable, str(HERE / "floor_client.py"),
                                     str(frame)], n, env)
        return res
    finally:
        server.stop()


def bench(args: argparse.Namespace) -> dict:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    have_torch = _has_torch()
    weights = Path(args.weights) if args.weights else (make_weights(work) if have_torch else None)
    model = Path(args.model) if args.model else work / "model.onnx"
    os.environ["FRAMEQC_CACHE"] = str(work / "cache")  # graphs and engine choices, for all
    os.environ.pop("FRAMEQC_ENGINE", None)  # every engine choice is frameqc's own (auto)
    (work / "cache" / "engines.json").unlink(missing_ok=True)  # made in this run, by it
    make_models(model, weights)
    files = model_files(model)
    frames = make_frames(work / "frames", args.frames)
    binned = make_prebinned(work / "binned", max(48, args.frames))
    frame = frames[0]
    nosock = {"FRAMEQC_SOCKET": str(work / "no-server.sock")}
    from frameqc.runtime.model.engines.cpuflags import cpu_flags, cpu_name, units

    r: dict = {"machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                           "cpu": cpu_name(), "units": units(cpu_flags()),
                           "python": platform.python_version(), "platform": platform.platform(),
                           "install": as_installed(), "load_before": os.getloadavg()},
               "frames": len(frames), "prebinned": len(list(binned.iterdir())),
               "repeat": args.repeat, "models": {k: str(v) for k, v in files.items()}}

    print("(i) inference only: every model file on every engine", file=sys.stderr)
    r["engines"] = engine_rates(files, args.repeat)
    if weights is not None and have_torch:
        prebinned = work / "frame_000_bin9.fits"
        subprocess.run([*FRAMEQC, "bin", "-b", "9", "--overwrite", "-o", str(work), str(frame)],
                       check=True, stdout=subprocess.DEVNULL)
        print("(a) torch one-shot", file=sys.stderr)
        r["torch_oneshot"] = run_repeated([sys.executable, str(HERE / "upstream_oneshot.py"),
                                           str(weights), "2", str(prebinned)], args.repeat)
    for name, m in files.items():
        print(f"(b) cold one-shot {name}", file=sys.stderr)
        shutil.rmtree(work / "cache" / "graphs", ignore_errors=True)
        oneshot = [*FRAMEQC, "classify", "--model", str(m), str(frame)]
        r[f"first_{name}"] = run_repeated(oneshot, 1, nosock)  # optimises, saves the graph
        r[f"cold_{name}"] = run_repeated(oneshot, args.repeat, nosock)
        if name != "bf16":
            r[f"floor_{name}"] = floor(m, frames[:20], args.repeat)
    print("(b') cold one-shot fp32 on OpenVINO (the engine a one-shot does not take)",
          file=sys.stderr)
    r["cold_fp32_openvino"] = run_repeated([*FRAMEQC, "classify", "--engine", "openvino",
                                            "--model", str(model), str(frame)], args.repeat,
                                           nosock)
    with tempfile.TemporaryDirectory() as tmp:
        for name, m in files.items():
            print(f"(c) resident one-shots {name}", file=sys.stderr)
            r[f"resident_{name}"] = resident(m, frame, args.resident, Path(tmp) / "b.sock")
    for name, m in files.items():
        print(f"(d) batch {name}: {r['prebinned']} pre-binned frames, {len(frames)} full-size",
              file=sys.stderr)
        r[f"batch_binned_{name}"] = batch_rate(m, binned, min(args.repeat, 3), nosock)
        r[f"batch_{name}"] = batch_rate(m, work / "frames", 1, nosock)
    best = best_model(r)
    if args.docker_image:
        print("(c') resident one-shots through docker exec, int8", file=sys.stderr)
        r["docker_int8"] = docker_oneshots(args.docker_image, files["int8"], frame, args.resident)
    if _has_dask():
        print(f"(e) archive {best} against classify, on {len(frames)} frames cycled",
              file=sys.stderr)
        r["archive"] = archive_rate(files[best], frames, work) | {"model": best}
    print("(g) the floor: an interpreter and the one-shot's imports", file=sys.stderr)
    r["floor"] = {k: run_repeated(cmd, args.repeat) for k, cmd in FLOOR.items()}
    if not args.no_demo:
        print("(h) the demo, first run and second", file=sys.stderr)
        r["demo"] = demo_runs()
    print("(f) FLOP rate and stages", file=sys.stderr)
    r["sgemm_gflops"] = round(sgemm_gflops(), 1)
    r["vgg16_gmacs"] = round(vgg16_macs() / 1e9, 2)
    r["stages_fp32_2048"] = stage_timings(model, frames[:20])
    r["machine"]["load_after"] = os.getloadavg()
    return r


def best_model(r: dict) -> str:
    """The model file whose best engine has the highest raw rate here."""
    top = max(r["engines"].values(), key=lambda e: e["frames_per_s"])
    return top["precision"]


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
            "median_s": round(child["median_s"] + prep, 4),
            "min_s": round(child["min_s"] + min(steps), 4),
            "peak_rss_mb": child["peak_rss_mb"], "prepack": prepack}


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


def archive_rate(model: Path, frames: list[Path], work: Path, n: int = 64,
                 repeat: int = 3) -> dict:
    """``frameqc archive`` against ``frameqc classify`` on the same frames and cores.

    Each command's rate is its marginal rate: ``n`` frames over the extra time a list of
    ``2n`` paths takes against a list of ``n`` (the frames cycled, best of ``repeat``; no
    extra time at all, a measurement gone wrong, is a rate of 0, which fails), so
    neither's fixed cost counts (an interpreter, imports, the session; the archive's
    cluster, ~1-2 s): an archive of 10^6 frames runs at this rate. The whole runs are kept
    too, and the peak RSS of the largest process (a worker, for the archive: a child's
    children are counted by their largest). ``n`` is 4 tasks of the archive's default
    size: 2 for each of 2 workers.
    """
    lists = {}
    for size in (n, 2 * n):
        lists[size] = work / f"archive-{size}.txt"
        lists[size].write_text("".join(f"{frames[i % len(frames)]}\n" for i in range(size)))
    walls: dict[str, dict[int, float]] = {"archive": {}, "batch": {}}
    peaks = {"archive": 0.0, "batch": 0.0}
    nosock = {"FRAMEQC_SOCKET": str(work / "no-server.sock")}

    def timed_run(kind: str, size: int, cmd: list[str]) -> None:
        wall, peak = child_stats(cmd, nosock)
        walls[kind][size] = min(wall, walls[kind].get(size, wall))
        peaks[kind] = max(peak, peaks[kind])

    for _ in range(repeat):
        for size, listed in lists.items():
            with tempfile.TemporaryDirectory(dir=work) as out:
                timed_run("archive", size, [*FRAMEQC, "archive", "--model", str(model),
                                            "-o", out, f"@{listed}"])
            timed_run("batch", size, [*FRAMEQC, "classify", "--model", str(model),
                                      "--format", "csv", f"@{listed}"])
    return {"frames": n, "distinct_frames": min(n, len(frames)), "repeat": repeat} | {
        kind: {"seconds": round(w[2 * n], 2), "frames_per_s": round(2 * n / w[2 * n], 2),
               "fixed_s": round(2 * w[n] - w[2 * n], 2),
               "marginal_frames_per_s": round(n / (w[2 * n] - w[n]), 2)
               if w[2 * n] > w[n] else 0.0,
               "peak_rss_mb": round(peaks[kind], 1)}
        for kind, w in walls.items()}


def report(r: dict) -> str:
    """The run as one table (inference, one-shots, resident, batches, archive, floors), then
    the targets as ratios of figures in it."""
    out = [f"{r['machine']['cpu']} ({r['machine']['units']}), {r['machine']['affinity']} "
           f"CPUs; load {r['machine']['load_before'][0]:.1f} before, "
           f"{r['machine']['load_after'][0]:.1f} after", ""]
    e = r["engines"]
    w = max(len(k) for k in e)
    out.append(f"{'inference only (224x224)':<{w}}  {'ms/frame':>8}  {'frames/s':>8}  "
               f"{'batch 1':>7}  {'GFLOP/s':>7}  max|dp| vs fp32")
    for k, v in e.items():
        out.append(f"{k:<{w}}  {v['batch8_s'] * 1000:>8.1f}  {v['frames_per_s']:>8.1f}  "
                   f"{v['batch1_s'] * 1000:>7.1f}  {v['gflops']:>7.0f}  "
                   f"{v['max_dp']:.1e}{'' if v['whole_batches'] else '  (frame by frame)'}")
    out.append("(ms/frame: batches of 8 as frameqc runs them; batch 1: ms for a lone frame)")
    out.append("")
    rows = []
    torch_s = r.get("torch_oneshot", {}).get("median_s")

    def row(what: str, s: float | None, rss: float | None, note: str = "") -> None:
        speed = f"{torch_s / s:.1f}x" if torch_s and s else "-"
        rows.append((what, f"{s:.3f}" if s is not None else "-", speed,
                     f"{rss:.0f}" if rss else "-", note))

    if torch_s:
        row("torch one-shot (upstream, pre-binned frame)", torch_s,
            r["torch_oneshot"]["peak_rss_mb"])
    python_s = r["floor"]["python"]["median_s"]
    models = list(r["models"])
    for k in models:
        c = r[f"cold_{k}"]
        f = r.get(f"floor_{k}")
        row(f"cold one-shot {k} (2048x2048)", c["median_s"], c["peak_rss_mb"],
            f"p95 {c['p95_s']:.3f}" + (f"; {c['median_s'] / f['median_s']:.2f}x its floor"
                                       if f else "; OpenVINO (no onnxruntime floor)"))
        if f:
            row(f"  its floor (imports, cached graph, infer; prepare {f['prepare_s']:.3f})",
                f["median_s"], f.get("peak_rss_mb"))
    c = r["cold_fp32_openvino"]
    row("cold one-shot fp32 pinned to OpenVINO", c["median_s"], c["peak_rss_mb"],
        f"p95 {c['p95_s']:.3f} (why one-shots stay on onnxruntime)")
    for k in models:
        c = r[f"resident_{k}"]
        floor_s = c["floor"]["median_s"]
        row(f"resident one-shot {k} ({c['engine']})", c["median_s"], c["peak_rss_mb"],
            f"p95 {c['p95_s']:.3f}; server {c['server_peak_rss_mb']:.0f} MB, its "
            f"{c['server_s']:.3f} s; {c['median_s'] / floor_s:.2f}x its floor")
        row("  its floor (bench/floor_client.py, same server)", floor_s,
            c["floor"]["peak_rss_mb"], f"python alone {python_s:.3f}")
    if "docker_int8" in r:
        d = r["docker_int8"]
        row("resident one-shot int8 via docker exec", d["median_s"], None,
            f"p95 {d['p95_s']:.3f}; docker exec of python "
            f"{d['docker_exec_python']['median_s']:.3f}")
    for k in models:
        for kind, label in (("batch_binned", "pre-binned 227x227"), ("batch", "full-size")):
            b = r[f"{kind}_{k}"]
            row(f"batch {k}, {b['frames']} {label} frames", b["seconds"] / b["frames"],
                b["peak_rss_mb"], f"{b['frames_per_s']:.1f} frames/s whole run, "
                f"{b['steady_frames_per_s']:.1f}/s once started")
    if "archive" in r:
        a = r["archive"]
        for kind, what in (("archive", "archive on a LocalCluster"),
                           ("batch", "classify, the same list")):
            k = a[kind]
            row(f"{what}: {a['model']}, {2 * a['frames']} full-size frames",
                k["seconds"] / (2 * a["frames"]), k.get("peak_rss_mb"),
                f"{k['frames_per_s']:.1f} frames/s whole run; {k['marginal_frames_per_s']:.1f}"
                f"/s past its fixed {k['fixed_s']:.1f} s")
    for k, f in r["floor"].items():
        row(f"floor: {k}", f["median_s"], f["peak_rss_mb"], f"p95 {f['p95_s']:.3f}")
    w = max(len(x[0]) for x in rows)
    out.append(f"{'':<{w}}  {'seconds':>8}  {'speed-up':>8}  {'peak MB':>7}  notes")
    out += [f"{a:<{w}}  {b:>8}  {c:>8}  {d:>7}  {e}" for a, b, c, d, e in rows]
    out.append("")
    fp32_ort = e.get("fp32 on onnxruntime")
    out.append(f"sgemm {r['sgemm_gflops']:.0f} GFLOP/s (numpy, all cores); vgg16: "
               f"{r['vgg16_gmacs']} GMAC/frame")
    if "demo" in r:
        d = r["demo"]
        out.append(f"demo: first run {d['first_s']:.1f} s, peak {d['first_peak_rss_mb']:.0f} MB; "
                   f"second {d['second_s']:.1f} s, peak {d['second_peak_rss_mb']:.0f} MB; "
                   f"{d['disk_mb']:.0f} MB on disk")
    st = r["stages_fp32_2048"]
    out.append("one 2048x2048 frame, median stages: " +
               ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in st.items()))
    checks = targets(r, fp32_ort)
    out.append("")
    held_missed = []
    for name, (value, held_value) in checks.items():
        op, goal, held = TARGETS[name]
        if value is None:
            out.append(f"target {name} {op} {goal:g}: -  not measured in this run")
            continue
        judged = held_value if held and held_value is not None else value
        ok = judged >= goal if op == ">=" else judged <= goal
        shown = f"{value:.2f}" + (f" (best of repeats {held_value:.2f})"
                                  if held and held_value is not None else "")
        out.append(f"target {name} {op} {goal:g}: {shown}  {'met' if ok else 'NOT MET'}"
                   f"{'  [held by CI]' if held else ''}")
        if held and not ok:
            held_missed.append(name)
    r["targets"] = {k: v[0] for k, v in checks.items()}
    r["held_missed"] = held_missed
    return "\n".join(out)


def targets(r: dict, fp32_ort: dict | None) -> dict[str, tuple[float | None, float | None]]:
    """Each target's ratio: (from medians, from the best of the repeats where held)."""
    torch_s = r.get("torch_oneshot", {}).get("median_s")
    best = best_model(r)
    raw = max(v["frames_per_s"] for v in r["engines"].values())
    resident_best = r[f"resident_{best}"]

    def ratio(a: dict, b: dict, key: str) -> tuple[float, float]:
        return a["median_s"] / b[key], a["min_s"] / b.get("min_s", b[key])

    binned = r[f"batch_binned_{best}"]["steady_frames_per_s"] / raw
    out = {
        "cold fp32 one-shot / its floor": ratio(r["cold_fp32"], r["floor_fp32"], "median_s"),
        "cold int8 one-shot / its floor": ratio(r["cold_int8"], r["floor_int8"], "median_s"),
        "resident one-shot / its floor (fastest engine)": (
            resident_best["median_s"] / resident_best["floor"]["median_s"],
            resident_best["min_s"] / resident_best["floor"]["min_s"]),
        "batch on pre-binned frames / the best engine's raw rate": (binned, binned),
        "archive / batch rate (same cores)": (
            r["archive"]["archive"]["marginal_frames_per_s"]
            / r["archive"]["batch"]["marginal_frames_per_s"], None)
        if "archive" in r else (None, None),
        "cold int8 one-shot peak RSS / its floor's": (
            r["cold_int8"]["peak_rss_mb"] / r["floor_int8"]["peak_rss_mb"], None),
        "fp32 inference / sgemm rate": (
            fp32_ort["gflops"] / r["sgemm_gflops"] if fp32_ort else None, None),
        "cold fp32 one-shot vs torch one-shot": (
            torch_s / r["cold_fp32"]["median_s"] if torch_s else None, None),
        "cold int8 one-shot vs torch one-shot": (
            torch_s / r["cold_int8"]["median_s"] if torch_s else None, None),
        "resident one-shot vs torch one-shot": (
            torch_s / resident_best["median_s"] if torch_s else None, None),
        "demo first run seconds": (r["demo"]["first_s"] if "demo" in r else None, None),
        "demo first run peak RSS MB": (
            r["demo"]["first_peak_rss_mb"] if "demo" in r else None, None),
    }
    return out


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
    p.add_argument("--hold", action="store_true",
                   help="exit 1 when a target marked [held by CI] is not met (CI)")
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
    if args.hold and r["held_missed"]:
        print(f"held targets not met: {'; '.join(r['held_missed'])}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
