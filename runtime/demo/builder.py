"""``frameqc demo``: the whole pipeline on synthetic IO:O frames, with no torch and no network.

The demo model has the real architecture (vgg16 + the transfer head). Its convolutions
are random, as torchvision initialises them, and its head is fitted here by logistic
regression on the features of synthetic good, shutter-failure and wobble frames, so its
decisions are learnt, not scripted. It is built once and cached: the first run takes
under 20 s on two cores (10.3-10.6 s and 868-893 MB on this project's machine; 26.7 s with
every step in turn and an unoptimised features session, before the head was fitted on
fewer, full-size frames), as the frames are made in threads
(numpy releases the GIL in its random draws and array arithmetic, most of a frame's
cost) while the main thread draws the weights, and while the model is saved and loaded.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import numpy as np

from frameqc.runtime.data.reader import FITS, Frame
from frameqc.runtime.data.synthetic import KINDS, make_frame, write_fits
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.recipes import AsinhRecipe
from frameqc.runtime.util.paths import cache_dir
from frameqc.runtime.util.progress import Progress

LABELS = ("OK", "Shutter", "Wobble")
TRUTH = dict(zip(KINDS, LABELS, strict=True))
N_TRAIN = 30
#: Training frames are the demo frames' size, 2048 px, binned 9x9 by the recipe. Made at
#: 1365 px (binned 6x6: a median of 36 pixels, not 81, so a noisier sky) 60 of them fitted a
#: head that took good frames for wobbles: 77 % right on 60 held-out 2048 px frames, and
#: demo_04 a wobble with p = 1.000 on every run. 30 at 2048 px: 90 % right on those, and
#: the nine demo frames all right, at about the cost of the 60 smaller ones to draw and
#: half the features to compute.
TRAIN_SIZE = 2048
#: Frames per features batch. One at a time through the optimised session: as fast a
#: frame as 4 at a time (0.108 s against 0.111 s here), and the peak of the first run is
#: 890 MB instead of 955-994 MB (vgg16's first activations take 13 MB a frame, more in
#: the optimised layout).
FEATURE_BATCH = 1
TRAIN_SEED, DEMO_SEED = 10_000, 20_000
#: Threads making frames: each holds one raw frame at a time (a 2048 px one peaks near
#: 100 MB while drawn), and hands back a 600 KB tensor or a written file.
WORKERS = 2


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, lam: float = 1e-2,
                iters: int = 500, lr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by gradient descent on standardised features.

    Returns ``(W, b)`` for the raw features: ``logits = x @ W.T + b``.
    """
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w, b, onehot = np.zeros((k, x.shape[1])), np.zeros(k), np.eye(k)[y]
    for _ in range(iters):
        logits = z @ w.T + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(y)
        w -= lr * (g.T @ z + lam * w)
        b -= lr * g.sum(0)
    return w / sd, b - (w / sd) @ mu


def head_from_linear(w: np.ndarray, b: np.ndarray, hidden: int = 256) -> dict[str, np.ndarray]:
    """The transfer head (Linear -> ReLU -> Linear) computing exactly ``w @ x + b``.

    ReLU(v) - ReLU(-v) = v: hidden unit k carries +logit k, unit k + n carries -logit k.
    """
    n = len(b)
    w1, b1 = np.zeros((hidden, w.shape[1]), np.float32), np.zeros(hidden, np.float32)
    w1[:n], w1[n:2 * n], b1[:n], b1[n:2 * n] = w, -w, b, -b
    w2 = np.zeros((n, hidden), np.float32)
    w2[np.arange(n), np.arange(n)], w2[np.arange(n), n + np.arange(n)] = 1.0, -1.0
    return {"classifier.6.0.weight": w1, "classifier.6.0.bias": b1,
            "classifier.6.3.weight": w2, "classifier.6.3.bias": np.zeros(n, np.float32)}


def _release_freed_memory() -> None:
    """Hand back to the system what the frame-making threads freed, before the network runs.

    glibc keeps it in each thread's arena (as transparent huge pages, here), and the
    features session then sits on top of it: 964 MB at the first run's peak instead of
    926 MB with this, at no cost in time. Nothing to do where there is no glibc.
    """
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _training_tensor(recipe: AsinhRecipe, i: int) -> np.ndarray:
    """Training frame ``i``, prepared as the model will see it (its raw frame is dropped)."""
    frame = make_frame(KINDS[i % len(KINDS)], TRAIN_SIZE, TRAIN_SEED + i)
    return recipe.prepare(Frame(FITS, frame)).tensor


def build_model(path: Path, progress: Progress, n_train: int = N_TRAIN,
                pool: Executor | None = None,
                then: Callable[[], object] | None = None) -> None:
    """Draw the network, fit its head on synthetic frames, write it with its card.

    The weights are drawn a block at a time straight into the model's weights file, the
    features are computed by a session that memory-maps it, and the fitted head is
    written over the placeholder's bytes: 528 MB of weights, never held twice.

    The training frames are made by ``pool`` (its own threads if None) while the main
    thread draws the weights; each keeps its own seed, so the model is the same bytes as
    when built one step after another. The network runs once they are all made: frames
    drawn beside its session took the cores its 2 threads wait for each other on (the
    first run took longer, not shorter) and 30-50 MB more at the peak. ``then`` is
    called once the features are computed, to put the pool to work on what follows
    (``run`` makes the demo frames there, while the head is fitted and the model saved
    and loaded).
    """
    own = pool is None
    if own:
        pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="frameqc-demo")
    recipe = AsinhRecipe()
    tensors = [pool.submit(_training_tensor, recipe, i) for i in range(n_train)]
    try:
        _build(path, progress, recipe, tensors, then)
    finally:
        for future in tensors:  # none left after a build; the queue after a failure
            future.cancel()
        if own:
            pool.shutdown()


def _build(path: Path, progress: Progress, recipe: AsinhRecipe,
           tensors: list[Future[np.ndarray]], then: Callable[[], object] | None) -> None:
    import onnx

    from frameqc.runtime import __version__
    from frameqc.runtime.model.install import install_model, new_stage
    from frameqc.runtime.model.session import open_session
    from frameqc.runtime.model.vgg16_graph import (
        FEATURES,
        build_graph,
        iter_random_params,
        write_params,
    )

    t0 = time.perf_counter()
    progress.say("building the demo model once (about 20 s; cached afterwards)")
    n_train = len(tensors)
    truth = [i % len(KINDS) for i in range(n_train)]
    path.parent.mkdir(parents=True, exist_ok=True)
    staged, location = new_stage(path)
    data = staged.parent / location
    params = write_params(iter_random_params(len(LABELS), seed=0), data)
    onnx.save_model(build_graph(params, features=True), str(staged))
    progress.say(f"  random vgg16 weights drawn ({time.perf_counter() - t0:.0f} s)")
    for done, future in enumerate(tensors, 1):
        future.result()
        progress.say(f"  synthetic training frames {done}/{n_train}", done=done == n_train)
    _release_freed_memory()
    # optimised as every frameqc session is: 0.108 s a frame instead of 0.136 s, at 23 MB
    # more (its reordered convolution weights; the fully connected ones are mapped)
    session = open_session(staged)
    feats = []
    for i in range(0, n_train, FEATURE_BATCH):
        batch = np.stack([f.result() for f in tensors[i:i + FEATURE_BATCH]])
        feats.append(session.run([FEATURES], {"image": batch})[0])
        done = min(i + FEATURE_BATCH, n_train)
        progress.say(f"  features {done}/{n_train}", done=done == n_train)
    del session
    if then is not None:
        then()
    w, b = fit_softmax(np.concatenate(feats).astype(np.float64), np.array(truth), len(LABELS))
    with open(data, "r+b") as fh:  # the fitted head over the placeholder, byte for byte
        for name, value in head_from_linear(w, b).items():
            offset = {e.key: e.value for e in params[name].external_data}["offset"]
            fh.seek(int(offset))
            np.ascontiguousarray(value, np.float32).tofile(fh)
    digest = hashlib.sha256()
    with open(data, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    card = ModelCard(labels=LABELS, alerts=("Shutter", "Wobble"), threshold=0.5,
                     recipe=recipe.params(), weights_sha256=digest.hexdigest(),
                     weights_name="demo (random vgg16 convolutions, fitted head)",
                     frameqc_version=__version__,
                     exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     onnx_version=onnx.__version__,
                     notes=f"demo model: head fitted on {n_train} synthetic frames; "
                           "not for real frames")
    onnx.save_model(build_graph(params, metadata=card.to_metadata()), str(staged))
    install_model(staged, path)
    progress.say(f"  demo model written: {path} ({time.perf_counter() - t0:.0f} s)")


def _demo_frame(path: Path, kind: str, seed: int) -> None:
    part = path.with_name(path.name + ".part")  # a run stopped midway leaves no half frame
    write_fits(part, make_frame(kind, 2048, seed), OBJECT="frameqc demo",
               FQCTRUTH=(kind, "what this synthetic frame really is"))
    part.replace(path)


def submit_frames(directory: Path, pool: Executor, per_kind: int = 3
                  ) -> tuple[list[tuple[Path, str]], list[Future[None]]]:
    """The demo frames' ``(path, kind)`` and the futures writing those not yet there."""
    directory.mkdir(parents=True, exist_ok=True)
    out, writing = [], []
    for i in range(per_kind * len(KINDS)):
        kind = KINDS[i % len(KINDS)]
        path = directory / f"demo_{i + 1:02d}.fits"
        if not path.exists():
            writing.append(pool.submit(_demo_frame, path, kind, DEMO_SEED + i))
        out.append((path, kind))
    return out, writing


def run(out: TextIO = sys.stdout, err: TextIO = sys.stderr, directory: Path | None = None,
        rebuild: bool = False) -> int:
    """Build (or reuse) the demo model and frames, classify, print the table.

    When the model is built, the demo frames are made by the threads that made its
    training frames, once its features are computed: while the head is fitted and the
    model written and loaded, mostly on one core (and never beside the features session:
    a 2048 px frame takes 100 MB while it is drawn).
    """
    from frameqc.runtime.engine.pipeline import Classifier
    from frameqc.runtime.model.session import Model

    root = directory or cache_dir() / "demo"
    model_path = root / "demo-vgg16.onnx"
    progress = Progress(stream=err)
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="frameqc-demo") as pool:
        frames: list[tuple[Path, str]] = []
        writing: list[Future[None]] = []

        def start_frames() -> None:
            made, started = submit_frames(root / "frames", pool)
            frames.extend(made)
            writing.extend(started)

        try:
            if rebuild or not model_path.exists():
                build_model(model_path, progress, pool=pool, then=start_frames)
            else:
                start_frames()
            t0 = time.perf_counter()
            # onnxruntime, as a one-shot: a first run measuring engines would cost seconds
            # and both engines' memory
            model = Model(model_path, engine="onnxruntime")
            load_s = time.perf_counter() - t0
            for future in writing:
                future.result()
        finally:
            for future in writing:
                future.cancel()
    classifier = Classifier(model)
    rows, right = [], 0
    results = classifier.run((str(p), p) for p, _ in frames)
    for result, (path, kind) in zip(results, frames, strict=True):
        d = result.decision
        ok = d is not None and d.label == TRUTH[kind]
        right += ok
        rows.append((path.name, kind, d.label if d else "error",
                     f"{d.probability:.3f}" if d else "-", "yes" if ok else "NO",
                     f"{result.seconds:.2f}"))
    head = ("frame", "what it is", "frameqc said", "p", "right", "seconds")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    out.write(f"\n{right} of {len(rows)} frames classified right "
              f"(model loaded in {load_s:.1f} s).\n"
              f"frames: {root / 'frames'}\nmodel:  {model_path}\n"
              f"try:    frameqc classify --model {model_path} {frames[1][0]}\n")
    return 0
