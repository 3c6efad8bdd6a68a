"""``frameqc label`` on 1,000 frames: time to the first frame, and the server's time per step.

Starts a real ``frameqc label`` subprocess on synthetic FITS frames (small files: the
step times do not depend on the frame size, the classification does), then, as the page
does, over HTTP on 127.0.0.1:

- **first frame**: from the command's start to the first frame's two pictures served
  (server ready, model loaded, first batch classified, pictures fetched);
- **next frame**: the two pictures of a frame (network view + stretched view);
- **label**: one ``POST /api/labels`` (the page saw no label on the frame), answered once
  the journal and labels.csv are fsynced.

Steps are timed from the client, so they include the loopback round trip: an upper
bound on the server's time. They are measured while the classification still runs in the
background (what a person sees at first) and after it. Prints ``uptime`` with the figures.

    python bench/label_bench.py --frames 1000 --work /tmp/label-bench
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def make_model(path: Path) -> Path:
    """The runtime's own vgg16 graph, random weights (no torch)."""
    from frameqc.runtime.model.card import ModelCard
    from frameqc.runtime.model.install import install_model, stage_model
    from frameqc.runtime.model.vgg16_graph import build_graph, random_params

    if not path.exists():
        card = ModelCard(labels=("Shutter", "OK"), alerts=("Shutter",),
                         weights_sha256="0123456789ab" * 5, weights_name="bench")
        install_model(stage_model(build_graph(random_params(2, seed=3),
                                              metadata=card.to_metadata()), path), path)
    return path


def make_frames(folder: Path, n: int, size: int) -> None:
    from frameqc.runtime.data.synthetic import make_frame, write_fits

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        path = folder / f"f{k:05d}.fits"
        if not path.exists():
            write_fits(path, make_frame(("good", "shutter", "wobble")[k % 3], size, k),
                       OBJECT="BENCH", EXPTIME=30.0)


def pct(values: list[float]) -> str:
    ms = np.array(values) * 1000
    return (f"p50 {np.percentile(ms, 50):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms  "
            f"max {ms.max():6.1f} ms  (n={len(ms)})")


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time (Linux /proc): the server's own cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steps(client: httpx.Client, token: str, state: dict, n: int, start: int
          ) -> tuple[list[float], list[float]]:
    """``n`` next-frame steps and ``n`` labels over the frames classified so far."""
    order = [i for i in state["order"] if not state["frames"][str(i)]["error"]]
    nxt, lab = [], []
    for i in order[start: start + n]:
        t0 = time.perf_counter()
        for kind in ("net", "view"):
            r = client.get(f"/img/{i}/{kind}")
            r.raise_for_status()
        nxt.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = client.post("/api/labels", content=json.dumps({"changes": [[i, "OK", None]]}),
                        headers={"X-FrameQC-Token": token})
        r.raise_for_status()
        lab.append(time.perf_counter() - t0)
    return nxt, lab


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--size", type=int, default=512, help="frame side in pixels (default 512)")
    p.add_argument("--work", type=Path, default=Path("/tmp/frameqc-label-bench"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warm", action="store_true",
                   help="keep the classification cache of an earlier run (labels are wiped)")
    args = p.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / "model.onnx")
    frames = work / f"frames-{args.size}"
    make_frames(frames, args.frames, args.size)
    out = work / "labels.csv"
    for old in work.glob("labels.csv*"):  # a cold start: no cache, no labels
        if old.is_dir() and args.warm:
            continue
        if old.is_dir():
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        else:
            old.unlink()
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    cmd = [sys.executable, "-m", "frameqc.runtime.cli", "label", "-m", str(model), str(frames),
           "-o", str(out), "--port", "0"] + (["--threads", str(args.threads)]
                                             if args.threads else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        select.select([proc.stdout], [], [], 300)
        url = proc.stdout.readline().strip()
        base, token = url.split("/?token=")
        t_url = time.perf_counter() - t0
        with httpx.Client(base_url=base, cookies={}, timeout=60) as client:
            client.get("/", params={"token": token}).raise_for_status()
            while True:
                state = client.get("/api/state").json()
                if state["order"]:
                    break
                time.sleep(0.02)
            first = state["order"][0]
            client.get(f"/img/{first}/net").raise_for_status()
            client.get(f"/img/{first}/view").raise_for_status()
            t_first = time.perf_counter() - t0
            print(f"{args.frames} frames of {args.size}x{args.size}: URL printed after "
                  f"{t_url:.2f} s, first frame served after {t_first:.2f} s")
            while len((state := client.get("/api/state").json())["order"]) < 60:
                time.sleep(0.5)
            if state["done"]:
                print("(warm start: every frame was classified already)")
            busy = steps(client, token, state, 50, 0)
            print(f"while classifying ({state['counts']['classified']} done):")
            print(f"  next frame  {pct(busy[0])}")
            print(f"  label       {pct(busy[1])}")
            while not (state := client.get("/api/state").json())["done"]:
                time.sleep(1)
            t_all = time.perf_counter() - t0
            print(f"all {args.frames} classified after {t_all:.1f} s "
                  f"({args.frames / (t_all - t_first):.1f} frames/s after the first)")
            cpu = cpu_seconds(proc.pid)
            idle = steps(client, token, state, 300, 50)
            cpu = cpu_seconds(proc.pid) - cpu
            print("after classification:")
            print(f"  next frame  {pct(idle[0])}")
            print(f"  label       {pct(idle[1])}")
            print(f"  server CPU per step (next frame + label): "
                  f"{1000 * cpu / len(idle[0]):.1f} ms")
            t1 = time.perf_counter()
            client.get("/api/state").raise_for_status()
            ms = 1000 * (time.perf_counter() - t1)
            print(f"  state (every frame, the page's poll) {ms:.1f} ms")
    finally:
        proc.terminate()
        proc.wait(30)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        select.select([proc.stdout], [], [], 300)
        base, token = proc.stdout.readline().strip().split("/?token=")
        with httpx.Client(base_url=base, timeout=60) as client:
            state = client.get("/api/state", params={"token": token}).json()
            print(f"restart on the same -o: every frame classified ({state['done']}) and "
                  f"{state['counts']['labelled']} labels back after "
                  f"{time.perf_counter() - t0:.2f} s")
    finally:
        proc.terminate()
        proc.wait(30)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
