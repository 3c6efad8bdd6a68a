"""The runtime runs where torch cannot be imported, and never imports torch or export/."""

import io
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import Executor, Future
from pathlib import Path

import pytest

from helpers import NO_TORCH

RUNTIME = Path(__file__).parent.parent / "runtime"

#: Runs ``frameqc ARGV`` with torch made unimportable; exit 99 if torch, or export/ for
#: any command but export, got in.
GUARD = NO_TORCH + """
from frameqc.runtime.cli import main
code = main(sys.argv[1:])
plugin = sys.argv[1:2] in (["export"], ["train"])
loaded = [m for m in sys.modules if m.split(".")[0] == "torch"
          or (m.startswith("frameqc.export") and not plugin)]
if loaded:
    print("loaded:", loaded, file=sys.stderr)
    sys.exit(99)
sys.exit(code)
"""


def frameqc_without_torch(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", GUARD, *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """``frameqc demo`` run once, torch-free; its directory and output."""
    root = tmp_path_factory.mktemp("demo")
    proc = frameqc_without_torch("demo", "--dir", str(root))
    assert proc.returncode == 0, proc.stderr
    return root, proc


def test_demo_runs_without_torch_and_is_right_on_every_frame(demo):
    _, proc = demo
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("demo_")]
    assert len(rows) == 9
    assert {r[1] for r in rows} == {"good", "shutter", "wobble"}
    right = int(re.search(r"(\d+) of 9 frames classified right", proc.stdout).group(1))
    assert right == sum(r[4] == "yes" for r in rows)
    assert right == 9, proc.stdout  # a first impression is not a confident mistake
    assert all(float(r[3]) > 0.75 for r in rows), proc.stdout  # and not a near thing
    assert "demo model written" in proc.stderr  # built on first run, with progress shown


def test_demo_model_is_a_normal_frameqc_model(demo):
    root, _ = demo
    proc = frameqc_without_torch("info", "--json", str(root / "demo-vgg16.onnx"))
    card = json.loads(proc.stdout)
    assert card["labels"] == ["OK", "Shutter", "Wobble"] and card["recipe"]["name"] == "asinh"
    proc = frameqc_without_torch("classify", "--model", str(root / "demo-vgg16.onnx"),
                                 "--format", "json", str(root / "frames"))
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 9


def test_second_demo_run_reuses_the_model(demo):
    root, _ = demo
    before = (root / "demo-vgg16.onnx").stat().st_mtime_ns
    proc = frameqc_without_torch("demo", "--dir", str(root), timeout=120)
    assert proc.returncode == 0 and "building" not in proc.stderr
    assert (root / "demo-vgg16.onnx").stat().st_mtime_ns == before


def test_evaluate_runs_without_torch_and_agrees_with_the_demo(demo, tmp_path):
    """A labelled set of the demo's frames (by the truth written in their headers)."""
    from astropy.io import fits

    root, demo_proc = demo
    for frame in sorted((root / "frames").glob("*.fits")):
        kind = fits.getheader(frame)["FQCTRUTH"]
        label = {"good": "OK", "shutter": "Shutter", "wobble": "Wobble"}[kind]
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / frame.name).symlink_to(frame)
    proc = frameqc_without_torch("evaluate", "--model", str(root / "demo-vgg16.onnx"),
                                 "--format", "json", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    [ev] = map(json.loads, proc.stdout.splitlines())
    right = int(re.search(r"(\d+) of 9 frames classified right", demo_proc.stdout).group(1))
    assert ev["n"] == 9 and ev["accuracy"] == right / 9
    assert sum(ev["confusion"][t][t] for t in ev["labels"]) == right


@pytest.mark.parametrize("command", ["export", "train"])
def test_torch_commands_without_torch_say_how_to_get_it(tmp_path, command):
    args = ["w.pt"] if command == "export" else [str(tmp_path), "--init", "w.pt"]
    proc = frameqc_without_torch(command, *args, "--labels", "A,B", "-o",
                                 str(tmp_path / "m"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"frameqc: {command} needs torch: "
                                   "pip install 'frameqc[export]'")


def test_runtime_sources_never_import_torch_or_export():
    for path in RUNTIME.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(torch|torchvision)\b", text, re.M), path
        assert "frameqc.export" not in text, path


class _InTurn(Executor):
    """Runs each task as it is submitted: the build one step after another."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_demo_model_is_the_same_bytes_built_in_threads_or_in_turn(tmp_path):
    """Training frames made in threads finish in any order; the model must not show it."""
    from frameqc.runtime.demo.builder import build_model
    from frameqc.runtime.model.peek import read_card
    from frameqc.runtime.util.progress import Progress

    built = {}
    for how, pool in (("threads", None), ("in turn", _InTurn())):
        path = tmp_path / how.replace(" ", "-") / "demo.onnx"
        build_model(path, Progress(stream=io.StringIO()), n_train=9, pool=pool)
        built[how] = read_card(str(path)).weights_sha256  # of the weights file, head and all
        shutil.rmtree(path.parent)  # 528 MB of weights: not kept with pytest's last runs
    assert built["threads"] == built["in turn"]
