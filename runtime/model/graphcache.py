"""A per-machine cache of optimised graphs, so a cold one-shot skips graph optimisation.

onnxruntime's full graph optimisation (fusions, the NCHWc layout for this CPU) costs more
when a session is built than it saves in one inference. The first process to load a model
on this machine saves the optimised graph; later ones load it with optimisation off and
get the very same kernels, so their outputs are bit for bit those of a freshly optimised
session (and of a resident server's).

An entry is keyed by the model file (its graph bytes, size and time), the onnxruntime
version and this CPU (its model name and flags: the NCHWc layout is specific to it). It
holds a copy of the weights: about the size of the model's ``.data`` file (528 MB for
fp32 vgg16, 133 MB for int8). ``$FRAMEQC_GRAPH_CACHE=off`` turns the cache off. An entry
whose manifest names another key (foreign) or whose files have the wrong sizes (damaged)
is never trusted: it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from frameqc.runtime.util.paths import cache_dir

GRAPH_CACHE_ENV = "FRAMEQC_GRAPH_CACHE"  # on (default) or off
GRAPH = "model.onnx"
WEIGHTS = GRAPH + ".data"
MANIFEST = "manifest.json"
_SMALL = 16 << 20  # graphs up to this size are hashed; larger (weights inside) are stat'ed


def enabled() -> bool:
    return os.environ.get(GRAPH_CACHE_ENV, "on").lower() not in ("off", "0", "no")


def _cpu() -> str:
    """This CPU as the optimiser sees it: model name and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    keep = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
    return hashlib.sha256("\n".join(keep).encode()).hexdigest()[:16]


def key(model: str | os.PathLike) -> dict[str, object]:
    """What an entry must match: the model file, onnxruntime and this CPU."""
    from frameqc.runtime.model import import_onnxruntime

    ort = import_onnxruntime()
    st = os.stat(model)
    if st.st_size <= _SMALL:
        digest = hashlib.sha256(Path(model).read_bytes()).hexdigest()
    else:
        digest = f"{os.path.realpath(model)}:{st.st_ino}"
    return {"model": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "onnxruntime": ort.__version__, "cpu": _cpu(), "level": "all"}


def entry_dir(material: dict[str, object]) -> Path:
    name = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir() / "graphs" / name


def lookup(material: dict[str, object]) -> Path | None:
    """The cached optimised graph for ``material``, or None (absent, foreign or damaged)."""
    entry = entry_dir(material)
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("key") != material:
            return None
        for name, size in manifest["files"].items():
            if (entry / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return entry / GRAPH


def staging(material: dict[str, object]) -> Path | None:
    """A new folder to save an optimised graph into (None when the cache is not writable)."""
    stage = entry_dir(material).with_name(f".stage-{os.urandom(8).hex()}")
    try:
        stage.mkdir(parents=True)
    except OSError:
        return None
    return stage


def commit(stage: Path, material: dict[str, object]) -> None:
    """Publish a staged entry in one rename; a damaged or foreign one is replaced."""
    entry = entry_dir(material)
    try:
        files = {p.name: p.stat().st_size for p in stage.iterdir()}
        if GRAPH not in files:
            raise OSError("no graph saved")
        (stage / MANIFEST).write_text(json.dumps({"key": material, "files": files}))
        if entry.exists() and lookup(material) is None:
            shutil.rmtree(entry, ignore_errors=True)
        os.rename(stage, entry)
    except OSError:  # another process published it first, or the disk is full
        shutil.rmtree(stage, ignore_errors=True)


def discard_stage(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)


def discard(material: dict[str, object]) -> None:
    """Remove an entry that failed to load."""
    shutil.rmtree(entry_dir(material), ignore_errors=True)
