"""How long ``frameqc night`` takes to rebuild a night of 1,000 frames, as cron runs it.

A JSON-lines log of 1,000 decisions over one night (10 % of them alerts or doubtful, so
100 rows with an image), the flagged frames as full-size 2048x2048 IO:O FITS files.
Timed as cron runs it, a fresh ``frameqc night`` process each time (interpreter,
imports, reading the log, the plot, the page): once cold (every image made); then
``--repeat`` times with the images cached and one new frame appended to the log before
each run (what cron meets during the night: the picture is drawn again); then
``--repeat`` times with nothing new (the picture is kept, matplotlib not imported).
Prints the figures, the in-process share, and the machine's load.

Then the memory of a season in one log (``--log-mb``, 100 MB by default: about 200,000
decisions over 140 nights): ``frameqc night`` streams the log and keeps only what the
requested night needs, so its peak RSS is printed against :data:`MEMORY_BOUND`.

    python bench/night_bench.py                   # 1,000 frames, 5 warm rebuilds
    python bench/night_bench.py --frames 5000 --flagged 0.02
    python bench/night_bench.py --log-mb 500 --repeat 0
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

FRAMEQC = [sys.executable, "-c", "from frameqc.runtime.cli import entry; entry()"]
#: The peak RSS ``frameqc night`` may take on a long log: the interpreter, matplotlib and
#: one night's records (about 80 MB), plus a share per frame of the season (about 100
#: bytes: its path's hash, night and label), as MB + a share of the log's size.
MEMORY_BOUND = (100, 0.25)


def make_night(root: Path, frames: int, flagged: float) -> Path:
    """The log, and FITS files for the frames the page shows with an image."""
    from frameqc.runtime.data.synthetic import make_frame, write_fits

    start = datetime(2025, 7, 8, 20, 0)
    step = timedelta(hours=10) / frames
    every = max(round(1 / flagged), 1) if flagged else frames + 1
    originals = {}
    for kind in ("good", "shutter"):
        originals[kind] = root / f"{kind}.fits"
        write_fits(originals[kind], make_frame(kind, 2048, 1), **{"DATE-OBS": start.isoformat()})
    lines = []
    for i in range(frames):
        when = start + i * step
        path = root / "frames" / f"h_e_{when:%Y%m%d}_{i:05d}.fits"
        flag = i % every == 0
        p = (0.9 if i % (2 * every) == 0 else 0.52) if flag else 0.03
        if flag:
            path.parent.mkdir(exist_ok=True)
            shutil.copy(originals["shutter" if p > 0.6 else "good"], path)
        label = "Shutter" if p >= 0.5 else "OK"
        lines.append(json.dumps({
            "time": when.strftime("%Y-%m-%dT%H:%M:%S+0000"), "host": "bench",
            "path": str(path), "label": label, "index": int(label == "OK"),
            "probability": max(p, 1 - p), "probabilities": {"Shutter": p, "OK": 1 - p},
            "doubtful": abs(p - 0.5) < 0.1, "date_obs": when.isoformat(), "night": "2025-07-08",
            "model": "0123456789ab", "precision": "int8", "seconds": 0.31,
            "timings": {"read": 0.05, "bin": 0.1, "prepare": 0.02, "infer": 0.14}}))
    log = root / "watch.log"
    log.write_text("\n".join(lines) + "\n")
    return log


def make_season(path: Path, megabytes: float) -> int:
    """A log of ``megabytes`` of decisions, 1,500 a night (as ``watch`` writes them)."""
    line = 0
    start = datetime(2025, 3, 1, 20, 0)
    with path.open("w") as fh:
        while fh.tell() < megabytes * 1e6:
            night, k = divmod(line, 1500)
            when = start + timedelta(days=night, seconds=20 * k)
            p = 0.9 if k % 50 == 0 else 0.52 if k % 50 == 1 else 0.03
            label = "Shutter" if p >= 0.5 else "OK"
            fh.write(json.dumps({
                "time": when.strftime("%Y-%m-%dT%H:%M:%S+0000"), "host": "bench",
                "path": f"/data/lt/{when:%Y%m%d}/h_e_{when:%Y%m%d}_{k:05d}_1_1_1.fits",
                "label": label, "index": int(label == "OK"), "probability": max(p, 1 - p),
                "probabilities": {"Shutter": p, "OK": 1 - p}, "doubtful": abs(p - .5) < .1,
                "date_obs": when.isoformat(timespec="milliseconds"),
                "night": (when - timedelta(hours=12)).date().isoformat(),
                "model": "0123456789ab", "precision": "int8", "seconds": 0.31,
                "timings": {"read": 0.05, "bin": 0.1, "prepare": 0.02, "infer": 0.14}}) + "\n")
            line += 1
    return line


def peak_memory(log: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of one ``frameqc night`` on ``log``, in a process of its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "code = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
             "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
             "time.perf_counter() - t)")
    said = subprocess.run([sys.executable, "-c", probe, *FRAMEQC, "night", str(log), "-o",
                           str(out)], capture_output=True, text=True, check=True).stdout
    code, peak, wall = said.split()
    if code != "0":
        sys.exit(f"frameqc night failed on the season's log (exit {code})")
    return float(peak), float(wall)


CPU: list[float] = []  # CPU seconds (user + system) of each rebuild, beside its wall time


def rebuild(log: Path, out: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([*FRAMEQC, "night", str(log), "-o", str(out)], capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    if proc.returncode:
        sys.exit(f"frameqc night failed: {proc.stderr.strip()}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--flagged", type=float, default=0.1, help="share shown with an image")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--log-mb", type=float, default=100,
                    help="the season's log whose peak memory is measured (0: none)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="frameqc-night-bench-") as tmp:
        root = Path(tmp)
        if args.log_mb:
            season = root / "season.log"
            lines = make_season(season, args.log_mb)
            size = season.stat().st_size / 1e6
            peak, wall = peak_memory(season, root / "season")
            base, share = MEMORY_BOUND
            bound = base + share * size
            print(f"frameqc night on a {size:.0f} MB log ({lines:,} decisions, "
                  f"{lines // 1500 + 1} nights): peak RSS {peak:.0f} MB ({peak / size:.1f} x "
                  f"the log), {wall:.1f} s; bound {base} MB + {share} x the log = "
                  f"{bound:.0f} MB: {'met' if peak <= bound else 'NOT MET'}")
            season.unlink()
        if not args.repeat:
            return
        log = make_night(root, args.frames, args.flagged)
        out = root / "web"
        cold = rebuild(log, out)
        images = len(list((out / "seen").glob("*.png")))
        lines = log.read_text().splitlines()
        warm = []
        for k in range(args.repeat):
            new = json.loads(lines[-1])
            new["path"] = new["path"].replace(".fits", f"_new{k}.fits")
            new["date_obs"] = (datetime.fromisoformat(new["date_obs"])
                               + timedelta(seconds=30 * (k + 1))).isoformat()
            with log.open("a") as fh:
                fh.write(json.dumps(new) + "\n")
            warm.append(rebuild(log, out))
        warm_cpu = CPU[-args.repeat:]
        same = [rebuild(log, out) for _ in range(args.repeat)]
        same_cpu = CPU[-args.repeat:]
        t0 = time.perf_counter()
        from matplotlib import dates  # noqa: F401 -- what drawing imports
        from matplotlib.figure import Figure  # noqa: F401

        from frameqc.runtime.lifecycle.night import build

        imports = time.perf_counter() - t0
        (out / ".night.png.digest").unlink()
        t0 = time.perf_counter()
        build([log], out)
        inner = time.perf_counter() - t0
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"frameqc night, {args.frames} frames, {images} with an image (2048x2048 FITS):")
    print(f"  cold (every image made)      {cold:6.2f} s")
    for what, times, cpu in (("cached images, a new frame", warm, warm_cpu),
                             ("cached images, nothing new", same, same_cpu)):
        print(f"  {what:28s} {statistics.median(times):6.2f} s median of {len(times)} "
              f"(min {min(times):.2f}, max {max(times):.2f}; CPU "
              f"{statistics.median(cpu):.2f} s); target <= 2 s")
    print(f"  in one process: importing matplotlib and frameqc {imports:.2f} s, then the "
          f"build (read, select, draw, page) {inner:.2f} s")
    print(f"  load: {load}")


if __name__ == "__main__":
    main()
