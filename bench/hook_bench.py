"""What alert hooks cost: on the deciding thread, per hook run, and in memory under a flood.

    python bench/hook_bench.py                    # makes a torch-free model
    python bench/hook_bench.py --model M.onnx --hooks 200

- ``call``: microseconds ``AlertHook.__call__`` takes on the thread that decides, per
  frame, for ``--alert-after 3`` on a night with a streak of 10 alerts every 100 frames,
  with the streak in memory and in its file (written at each alert and at the first frame
  after a streak: eleven writes a streak); ``write_ms``: one write of the streak (an atomic,
  fsync'd replace);
- ``run``: milliseconds per hook run of ``true``, from the queue to its exit reaped;
- ``flood``: peak RSS of a real ``frameqc classify`` of one alert frame whose hook writes
  400 MB to stderr, against the same run with a quiet hook. The target: the flood adds
  < 64 MiB (only a 64 KiB tail of a hook's stderr is kept).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOD_TARGET_KB = 64 * 1024


def call_us(n: int, streak: Path | None, frames: Path) -> float:
    """Per frame, on files that exist (an alert's frame is looked at: its identity)."""
    from frameqc.runtime.senders.hooks import AlertHook

    frames.mkdir(exist_ok=True)
    for i in range(n):
        (frames / f"f{i}.fits").touch()
    hook = AlertHook("true", ("Shutter",), after=3, err=io.StringIO(), streak=streak)
    recs = [{"path": str(frames / f"f{i}.fits"), "label": "Shutter" if i % 100 < 10 else "OK",
             "probability": 0.9, "model": "m", "precision": "int8"} for i in range(n)]
    start = time.perf_counter()
    for rec in recs:
        hook(rec, {})
    took = time.perf_counter() - start
    hook.close()
    return took / n * 1e6


def write_ms(n: int, path: Path) -> float:
    from frameqc.runtime.senders.streak import Streak

    streak = Streak(1, path)
    start = time.perf_counter()
    for i in range(n):
        streak.count = i % 2
        streak._keep()
    return (time.perf_counter() - start) / n * 1e3


def run_ms(n: int) -> float:
    from frameqc.runtime.senders.hooks import AlertHook

    hook = AlertHook("true", ("Shutter",), err=io.StringIO())
    rec = {"path": "/f.fits", "label": "Shutter", "probability": 0.9, "model": "m",
           "precision": "int8"}
    start = time.perf_counter()
    for _ in range(n):
        hook.run(rec, 1)
    return (time.perf_counter() - start) / n * 1e3


def peak_kb(model: Path, frame: Path, hook: str) -> tuple[int, str]:
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True); "
             "sys.stderr.buffer.write(p.stderr); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m",
                          "frameqc.runtime.cli", "classify", "--model", str(model), "-f",
                          "json", "--on-alert", hook, str(frame)],
                         capture_output=True, text=True, timeout=600)
    return int(res.stdout), res.stderr.strip()


def alert_model(work: Path, model: Path | None) -> Path:
    """A model whose every decision is an alert (both labels are alert labels)."""
    import onnx

    from frameqc.runtime.model.peek import read_card

    if model is None:
        from sink_bench import make_model

        model = make_model(work)
    card = read_card(model).with_(alerts=read_card(model).labels)
    target = model.with_name("hook-bench-alerts.onnx")
    proto = onnx.load(str(model), load_external_data=False)
    del proto.metadata_props[:]
    for key, value in card.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="an exported .onnx (default: make one)")
    ap.add_argument("--hooks", type=int, default=100, help="hook runs timed")
    ap.add_argument("--calls", type=int, default=2000, help="frames handed to the hook")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory(prefix="frameqc-hook-bench-") as tmp:
        work = Path(tmp)
        out = {
            "call_us": statistics.median(call_us(args.calls, None, work / "frames")
                                         for _ in range(args.repeat)),
            "call_us_streak_file": statistics.median(
                call_us(args.calls, work / f"s{i}.alert-streak", work / "frames")
                for i in range(args.repeat)),
            "write_ms": statistics.median(write_ms(50, work / "w.alert-streak")
                                          for _ in range(args.repeat)),
            "run_ms": statistics.median(run_ms(args.hooks) for _ in range(args.repeat)),
        }
        from frameqc.runtime.data.synthetic import make_frame, write_fits

        frame = work / "f.fits"
        write_fits(frame, make_frame("shutter", 227, 1))
        model = alert_model(work, args.model)
        quiet, _ = peak_kb(model, frame, "sh -c 'echo last words >&2; exit 1'")
        flood, said = peak_kb(model, frame, "sh -c 'yes flood | head -n 66666667 >&2; "
                                            "echo last words >&2; exit 1'")
        out.update(peak_kb_quiet=quiet, peak_kb_flood=flood, flood_said=said,
                   flood_met=flood - quiet < FLOOD_TARGET_KB)
    print(json.dumps(out, indent=2))
    return 0 if out["flood_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
