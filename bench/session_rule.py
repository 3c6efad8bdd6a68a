"""What one session rule for every process costs: prepacking by precision, frames one by one.

Since issue 17 a frame gets the same digits from a one-shot, a batch or the server: int8
always prepacks (a one-shot of one or two frames did not), and an unpacked (fp32)
session runs every frame of a batch on its own (a batch of one takes other kernels than
a larger batch). This prints what that costs, on this machine, now:

    python bench/session_rule.py --model M.onnx --int8 M.int8.onnx --frame F.fits

(a) the network's time per frame for fp32, a batch of 8 run whole and one by one;
(b) int8 session build, first and later frames, unpacked and prepacked;
(c) a cold ``frameqc classify`` of one frame, int8, with ``FRAMEQC_PREPACK=off`` (the old
    rule for one-shots) and with the rule (prepacked).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an fp32 model")
    ap.add_argument("--int8", required=True, help="an int8 model")
    ap.add_argument("--frame", required=True, help="a FITS frame")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.model.session import Model

    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    fp32 = Model(args.model)
    x = Classifier(fp32).recipe.prepare(__import__(
        "frameqc.runtime.data.reader", fromlist=["read_frame"]).read_frame(args.frame)).tensor
    one = np.ascontiguousarray(x[None], np.float32)
    eight = np.ascontiguousarray(np.repeat(one, 8, axis=0))
    run = fp32.session.run
    whole = median_time(lambda: run([fp32.output_name], {fp32.input_name: eight}), args.repeat)
    each = median_time(lambda: fp32.predict(eight), args.repeat)
    print(f"(a) fp32 network, per frame of a batch of 8: whole {whole / 8:.3f} s, "
          f"one by one {each / 8:.3f} s")

    for setting in ("off", "on"):
        os.environ["FRAMEQC_PREPACK"] = setting
        t0 = time.perf_counter()
        m = Model(args.int8)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        m.predict(one)
        first = time.perf_counter() - t0
        later = median_time(lambda m=m: m.predict(one), args.repeat)
        print(f"(b) int8 prepack {setting}: build {built:.2f} s, first frame {first:.3f} s, "
              f"later {later:.3f} s")
    os.environ.pop("FRAMEQC_PREPACK")

    cmd = [sys.executable, "-m", "frameqc.runtime.cli", "classify", "--model", args.int8,
           args.frame]
    env_none = {**os.environ, "FRAMEQC_SOCKET": "/nonexistent/none.sock"}
    for label, extra in (("unpacked (old one-shot rule)", {"FRAMEQC_PREPACK": "off"}),
                         ("prepacked (the rule now)", {})):
        wall = median_time(lambda extra=extra: subprocess.run(
            cmd, env={**env_none, **extra}, capture_output=True, check=True), args.repeat)
        print(f"(c) cold int8 one-shot, {label}: {wall:.2f} s")


if __name__ == "__main__":
    main()
