"""Which engine runs a model here: the fastest of those that compute what its card
validated, measured once per model file, CPU kind and thread count, then remembered.

Measured, not assumed: which engine is fastest depends on the CPU's matrix units and on
the model (on an AMX machine OpenVINO's int8 is 1.6x onnxruntime's; on an AMD EPYC with
VNNI but no AMX onnxruntime's int8 is the faster). The first process to load a model with
more than one candidate times them all, one after the other on the same frames (a few
seconds, once), and keeps the verdict in ``engines.json`` in the cache folder; later
processes read it, so a frame gets its digits from the same engine in every process on
this machine.

The measurement also says whether an engine gives a frame the same digits in a batch as
alone; only then does :meth:`Model.predict` run batches whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from frameqc.runtime.errors import UsageError
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.engines import AUTO, ENGINES, candidates, refusal, validated
from frameqc.runtime.model.engines.cpuflags import cpu_flags, cpu_name, signature
from frameqc.runtime.util.paths import cache_dir

STORE = "engines.json"
#: Frames timed per engine, batched and one by one (after one warm-up frame), REPEATS
#: times: the fastest repeat counts (a busy moment slows single runs, not the best of
#: several; a server measured while clients started beside it chose the slower engine).
FRAMES = 4
REPEATS = 3


@dataclass(frozen=True)
class Timing:
    """One engine's measurement: seconds a frame, whether frameqc runs its batches whole
    (where a batch keeps each frame's digits), and whether it was measured together with
    the other candidates (only such timings are compared: two taken at different moments
    may differ by the load between)."""

    seconds_per_frame: float
    whole_batches: bool
    together: bool = True


def stale(names: list[str], timings: dict[str, Timing]) -> bool:
    """Whether ``names`` must be measured (all of them, together) before one is chosen."""
    return any(n not in timings or (len(names) > 1 and not timings[n].together)
               for n in names)


def pick(card: ModelCard, engine: str, flags: frozenset[str] | None = None) -> list[str]:
    """The engines to consider for this model: the pinned one (checked) or the candidates.

    A pinned engine that cannot run the model, or a model no engine here can run, is a
    one-line :class:`UsageError`.
    """
    flags = cpu_flags() if flags is None else flags
    if engine != AUTO:
        why = refusal(engine, card, flags)
        if why:
            raise UsageError(why)
        return [engine]
    found = candidates(card, flags)
    if not found:
        first = next((n for n in validated(card)), "onnxruntime")
        raise UsageError(refusal(first, card, flags) or f"no engine can run this "
                         f"{card.precision} model here")
    return found


def key(path: str, threads: int, flags: frozenset[str]) -> str:
    """A measurement's key: the model file (as the graph cache knows it), CPU, threads, versions."""
    from importlib.metadata import PackageNotFoundError, version

    st = os.stat(path)
    versions = []
    for dist in ("onnxruntime", "openvino"):
        try:
            versions.append(version(dist))
        except PackageNotFoundError:
            versions.append(None)
    text = json.dumps([os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino,
                       signature(flags, cpu_name()), threads, versions])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def remembered(material: str) -> dict[str, Timing]:
    """The timings measured before for this key, by engine."""
    try:
        entry = json.loads((cache_dir() / STORE).read_text())[material]
        return {name: Timing(float(t["seconds_per_frame"]), bool(t["whole_batches"]),
                             t.get("together") is True)
                for name, t in entry["timings"].items() if name in ENGINES}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def remember(material: str, engine: str, timing: Timing) -> None:
    """Add one engine's timing to the store (one that cannot be written: measured again)."""
    from frameqc.runtime.util.files import write_atomic

    path = cache_dir() / STORE
    try:
        store = json.loads(path.read_text())
        if not isinstance(store, dict):
            store = {}
    except (OSError, ValueError):
        store = {}
    entry = store.get(material) if isinstance(store.get(material), dict) else {}
    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    timings[engine] = {"seconds_per_frame": round(timing.seconds_per_frame, 5),
                       "whole_batches": timing.whole_batches, "together": timing.together,
                       "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    store[material] = {"timings": timings}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(store, indent=1) + "\n")
    except OSError:
        pass


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One measuring process at a time on this machine (the archive's workers start
    together): the others wait, then read its verdict instead of measuring under its load
    and choosing otherwise. Where the cache folder cannot be written, no lock is taken."""
    import fcntl

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        fd = os.open(cache_dir() / (STORE + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def measure(run: Callable[[np.ndarray], np.ndarray], size: int, together: bool = True,
            whole: bool | None = None) -> Timing:
    """Time ``run`` on FRAMES frames as frameqc will run them, the best of REPEATS: in
    whole batches or one by one as ``whole`` says (onnxruntime's rule is its own:
    :meth:`Model.predict`), else (None) in whole batches where a batch gives each frame
    the digits it gets alone."""
    x = np.random.default_rng(0).random((FRAMES, 3, size, size), np.float32)
    run(x[:1])
    same = whole if whole is not None else bool(np.array_equal(
        run(x), np.concatenate([run(x[i:i + 1]) for i in range(FRAMES)])))
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        if same:
            run(x)
        else:
            for i in range(FRAMES):
                run(x[i:i + 1])
        best = min(best, time.perf_counter() - t0)
    return Timing(best / FRAMES, same, together)


def choose(names: list[str], timings: dict[str, Timing], model: str, said: bool) -> str:
    """The fastest of ``names`` by ``timings``; said on stderr when ``said`` (just measured)."""
    best = min(names, key=lambda n: timings[n].seconds_per_frame)
    if said and len(names) > 1:
        each = ", ".join(f"{n} {timings[n].seconds_per_frame * 1000:.0f} ms" for n in names)
        print(f"frameqc: measured the engines for {os.path.basename(model)} on this CPU "
              f"({each} a frame): {best} runs it from now on", file=sys.stderr)
    return best
