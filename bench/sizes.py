"""The wobble classifier at its images' own size: seconds per frame and peak memory.

For rgb images of each size (224, 512 and 1024 px by default), in one run on this
machine: ``frameqc serve --tcp`` answering the upstream protocol (fp32 and int8), a
``frameqc classify`` batch of images of that size (fp32 and int8), and the upstream torch
server (bench/upstream_wobble.py) answering the same image. Each server is started fresh
for each size, so its peak RSS (VmHWM) is that size's; a request's seconds are the
client's, from connect to reply. A batch's seconds per frame are frameqc's own per-frame
seconds (read, prepare, infer: the model's load left out), its peak RSS the process's.

    python bench/sizes.py --work /tmp/sizes-bench [--weights W.pt] [--sizes 224 512 1024]
    python bench/run.py --sizes ...    # the same table after the main one

Needs torch (the export and the upstream server).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import FRAMEQC, child_stats, make_weights  # noqa: E402

SIZES = (224, 512, 1024)


def image_bytes(side: int, seed: int) -> bytes:
    """A grey JPEG of a synthetic star field, as fits2grey would make one."""
    import numpy as np
    from PIL import Image

    from frameqc.runtime.data.synthetic import make_frame
    from frameqc.runtime.model.recipes import asinh_stretch, to_uint16

    plane = asinh_stretch(to_uint16(make_frame(("good", "wobble")[seed % 2], side, seed)))
    buf = io.BytesIO()
    Image.fromarray(np.repeat(plane[:, :, None], 3, axis=2)).save(buf, format="JPEG")
    return buf.getvalue()


def make_images(directory: Path, side: int, n: int, seed: int = 0) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = directory / f"img_{side}_{i:02d}.jpg"
        if not p.exists():
            p.write_bytes(image_bytes(side, seed + i))
        out.append(p)
    return out


def export_models(weights: Path, work: Path, sizes: tuple[int, ...]) -> dict[str, Path]:
    """fp32 and int8 rgb models of any size, int8 calibrated on images of ``sizes``."""
    out = work / "wobble-sizes.onnx"
    int8 = out.with_name("wobble-sizes.int8.onnx")
    if not int8.exists():
        cal = work / "calibration"
        for side in sizes:
            make_images(cal, side, 6 if side <= 512 else 3, seed=100 + side)
        subprocess.run([*FRAMEQC, "export", str(weights), "--labels", "Wobble,OK", "--alert",
                        "Wobble", "--threshold", "0.6", "--recipe", "rgb", "--calibration",
                        str(cal), "-o", str(out), "--int8", "--min-agreement", "0.01"],
                       check=True, stdout=subprocess.DEVNULL)
    return {"fp32": out, "int8": int8}


def request(port: int, data: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
        s.sendall(len(data).to_bytes(8, "big") + data)
        s.shutdown(socket.SHUT_WR)
        reply = b"".join(iter(lambda: s.recv(4096), b""))
    return time.perf_counter() - t0, reply


def peak_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024


def served(cmd: list[str], port_from, data: bytes, n: int) -> dict:
    """Start a server, time ``n`` requests of ``data`` after one to warm it, stop it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        port = port_from(proc)
        _, reply = request(port, data)
        if reply.startswith(b"ERROR") or not reply:
            raise RuntimeError(f"{cmd[2:4]}: {reply!r}")
        seconds = [request(port, data)[0] for _ in range(n)]
        return {"median_s": round(statistics.median(seconds), 3),
                "peak_rss_mb": round(peak_mb(proc.pid)), "reply": reply.decode()}
    finally:
        proc.kill()
        proc.wait()


def frameqc_port(proc: subprocess.Popen) -> int:
    for line in proc.stderr:
        m = re.search(r"tcp:[^,;]*:(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError("frameqc serve did not start")


def upstream_port(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        raise RuntimeError(f"the upstream server did not start: {proc.stderr.read()[-500:]}")
    return int(line)


def batch(model: Path, paths: list[Path]) -> dict:
    """A ``classify`` run over ``paths``: its frames' own seconds and the process's peak."""
    out = subprocess.run([*FRAMEQC, "classify", "--model", str(model), "-f", "json",
                          *map(str, paths)], capture_output=True, text=True, check=True).stdout
    seconds = [json.loads(line)["seconds"] for line in out.splitlines()]
    _, rss = child_stats([*FRAMEQC, "classify", "--model", str(model), "-f", "json",
                          *map(str, paths)])
    return {"n": len(paths), "median_s": round(statistics.median(seconds), 3),
            "peak_rss_mb": round(rss)}


def sizes_bench(work: Path, weights: Path | None = None, sizes: tuple[int, ...] = SIZES,
                repeat: int = 3) -> dict:
    """Every figure of the table, by size."""
    work.mkdir(parents=True, exist_ok=True)
    weights = weights or make_weights(work)
    models = export_models(weights, work, sizes)
    sock = work / "sizes.sock"
    out: dict = {"repeat": repeat, "sizes": {}}
    for side in sizes:
        image = make_images(work / "images", side, 1, seed=side)[0]
        data = image.read_bytes()
        row: dict = {}
        for precision, model in models.items():
            row[f"serve {precision}"] = served(
                [*FRAMEQC, "serve", "--model", str(model), "--socket", str(sock), "--tcp",
                 "127.0.0.1:0", "--timeout", "600"], frameqc_port, data, repeat)
            row[f"batch {precision}"] = batch(
                model, make_images(work / "images", side, 4 if side <= 512 else 2, seed=side))
        row["upstream torch server"] = served(
            [sys.executable, str(HERE / "upstream_wobble.py"), str(weights), "0"],
            upstream_port, data, repeat)
        out["sizes"][str(side)] = row
        print(f"  {side}x{side}: " + ", ".join(f"{k} {v['median_s']} s {v['peak_rss_mb']} MB"
                                              for k, v in row.items()), file=sys.stderr)
    return out


COLUMNS = ("serve fp32", "serve int8", "batch fp32", "batch int8", "upstream torch server")


def sizes_report(r: dict) -> str:
    """The table: seconds per frame and peak RSS (MB) per size and way of running."""
    head = ["size"] + [c for c in COLUMNS]
    rows = [head]
    for side, row in r["sizes"].items():
        rows.append([f"{side}x{side}"] + [f"{row[c]['median_s']:.3f} s {row[c]['peak_rss_mb']} MB"
                                          for c in COLUMNS])
    for side, row in r["sizes"].items():
        up = row["upstream torch server"]["median_s"]
        rows.append([f"{side} vs torch"] + [f"x{up / row[c]['median_s']:.2f}" for c in COLUMNS])
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
                     for x in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(Path.home() / ".cache" / "frameqc" / "bench-sizes"))
    p.add_argument("--weights", help="a 2-class state_dict (default: made up)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--repeat", type=int, default=3, help="requests timed per server")
    p.add_argument("--out", help="also write the figures as JSON here")
    args = p.parse_args()
    r = sizes_bench(Path(args.work), Path(args.weights) if args.weights else None,
                    tuple(args.sizes), args.repeat)
    print(sizes_report(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("FRAMEQC_GRAPH_CACHE", "off")
    main()
