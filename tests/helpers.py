"""What many test modules share: the labels of the test models, ways to run ``frameqc``,
and the checks and hostile inputs that several subjects use.

Fixtures live in conftest.py, which pytest loads by itself; what a test module imports
comes from here, never from conftest."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

LABELS = ("Shutter", "OK")

#: Python that makes torch unimportable, as it is in a venv without it: the start of a
#: ``python -c`` script for the tests that run frameqc or pytest where torch is not.
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTorch())
"""


class Lines:
    """A stream for ``err=``: what was written, as one text (``.text``)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> None:
        self.text += s

    def flush(self) -> None:
        pass


def wait_for(predicate, seconds: float, what: str):
    """``predicate()``'s first true value, asked every 0.1 s; an AssertionError naming
    ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"waited {seconds} s for {what}")


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``frameqc ARGV`` in this process; returns (exit code, stdout, stderr)."""
    from frameqc.runtime.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def frameqc(*argv: str, env: dict | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
    """Run ``frameqc ARGV`` in a new process, stdin closed, ``env`` over this environment."""
    return subprocess.run([sys.executable, "-m", "frameqc.runtime.cli", *argv],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1 and "Traceback" not in err


def png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20000, 10000)).save(buf, format="PNG")
    return buf.getvalue()


def spread_head(net, tensors: list[np.ndarray]) -> None:
    """Scale the last layer so the probabilities spread over (0, 1) on real frames.

    Random-init vgg16 gives nearly equal logits everywhere, which would make parity
    trivially met; this makes differences between frames show in the probabilities.
    """
    import torch

    head = net.classifier[6]
    with torch.no_grad():
        x = torch.from_numpy(np.stack(tensors))
        hidden = head[2](head[1](head[0](net.classifier[:6](torch.flatten(
            net.avgpool(net.features(x)), 1)))))
        d = (hidden @ (head[3].weight[0] - head[3].weight[1]) + head[3].bias[0]
             - head[3].bias[1])
        k = 2.5 / float(d.std())
        head[3].weight *= k
        head[3].bias *= k
        shift = float(d.mean()) * k / 2
        head[3].bias[0] -= shift
        head[3].bias[1] += shift


#: An alert hook that keeps each call's stdin and environment, in call order.
_RECORDER = """#!/bin/sh
n=$(ls "$1" | wc -l)
mkdir "$1/$n"
env -0 > "$1/$n/env"
cat > "$1/$n/stdin"
"""


def hook_recorder(folder) -> tuple:
    """An ``--on-alert`` command that keeps each call's stdin (the record) and FRAMEQC_*
    variables (raw bytes) in ``folder``, and a reader of the calls so far:
    ``[(record, {b"FRAMEQC_...": b"..."}), ...]``."""
    import json
    import shlex
    from pathlib import Path

    folder = Path(folder)
    script, calls = folder / "record.sh", folder / "calls"
    script.write_text(_RECORDER)
    script.chmod(0o755)
    calls.mkdir()

    def read() -> list[tuple[dict, dict[bytes, bytes]]]:
        out = []
        for n in range(len(list(calls.iterdir()))):
            env = dict(v.split(b"=", 1) for v in (calls / str(n) / "env").read_bytes()
                       .split(b"\0") if v.startswith(b"FRAMEQC_"))
            out.append((json.loads((calls / str(n) / "stdin").read_text()), env))
        return out

    return shlex.join([str(script), str(calls)]), read
