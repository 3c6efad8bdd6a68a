"""``frameqc train``: fine-tune the upstream network (vgg16 + its transfer head) on labelled frames.

Frames are prepared by ``frameqc.runtime`` (the exact preparation production runs), so
training and inference cannot drift apart. The layers that are not trained are run once
per frame and their output cached: an epoch then costs only the trained layers, which
makes CPU training practical. Everything random (split, initial head, shuffles,
dropout) is drawn from ``--seed``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from frameqc.runtime.engine.pipeline import prepare
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.lifecycle.labelled import LabelledSet
from frameqc.runtime.model.card import ModelCard
from frameqc.runtime.model.decision import decide
from frameqc.runtime.model.recipes import Recipe, make_recipe
from frameqc.runtime.util.progress import Progress

if TYPE_CHECKING:  # torch is imported where it is used: `frameqc --help` stays light
    import torch
    from torch import nn

#: What ``--tune`` trains; everything before it is frozen and cached.
TUNE = ("head", "classifier", "block5")
#: Prepared frames kept for the export's validation and int8 calibration.
KEEP_FRAMES = 96


@dataclass
class Config:
    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    tune: str = "head"


@dataclass
class Epoch:
    """One epoch's figures; validation is scored by the decisions the runtime makes."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_recall: dict[str, float]

    @property
    def balanced(self) -> float:
        return float(np.mean(list(self.val_recall.values())))

    def line(self) -> str:
        recall = ", ".join(f"{k} {v:.3f}" for k, v in self.val_recall.items())
        return (f"epoch {self.epoch:>3}  train loss {self.train_loss:.4f}  val loss "
                f"{self.val_loss:.4f}  val accuracy {self.val_accuracy:.3f}  recall: {recall}")


@dataclass
class Features:
    """A labelled set run through the frozen layers: features, targets, and a few tensors."""

    features: torch.Tensor
    targets: torch.Tensor  # label indices
    skipped: list[tuple[str, str]] = field(default_factory=list)
    tensors: list[np.ndarray] = field(default_factory=list)


def init_network(init: str, n_classes: int, seed: int, say: Callable[[str], None]
                 ) -> tuple[nn.Module, str, str]:
    """The starting network, the sha256 and the name of its weights.

    ``init`` is a state_dict file (the operators' current weights) or ``imagenet``
    (torchvision's ImageNet weights, only if already cached: nothing is downloaded).
    A head with another number of outputs than ``n_classes`` gets a new last layer.
    """
    import torch
    from torch import nn

    from frameqc.export.network import build_vgg16
    from frameqc.export.weights import load_weights

    torch.manual_seed(seed)
    if init == "imagenet":
        from torchvision.models import VGG16_Weights, vgg16

        weights = VGG16_Weights.IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file():
            raise UsageError(f"--init imagenet needs torchvision's vgg16 weights at {cached} "
                             "(frameqc downloads nothing); give --init WEIGHTS.pt instead")
        net = build_vgg16(n_classes)
        body = vgg16(weights=weights).state_dict()
        net.load_state_dict({k: v for k, v in body.items() if k != "classifier.6.weight"
                             and k != "classifier.6.bias"}, strict=True)
        say(f"starting from torchvision's ImageNet vgg16 with a new head ({n_classes} outputs)")
        return net, _sha256(cached), cached.name
    w = load_weights(init)
    net = build_vgg16(w.n_classes, w.hidden)
    net.load_state_dict(w.state_dict, strict=True)
    if w.n_classes != n_classes:
        net.classifier[6][3] = nn.Linear(w.hidden, n_classes)
        say(f"{w.name} has {w.n_classes} outputs and {n_classes} labels were given: its last "
            f"layer is replaced by a new Linear({w.hidden}, {n_classes})")
    return net, w.sha256, w.name


def split_network(net: nn.Module, tune: str) -> tuple[nn.Module, nn.Module]:
    """``(frozen, trained)``: ``trained(frozen(x))`` is the network's LogSoftmax output."""
    from torch import nn

    flat = nn.Flatten(1)
    if tune == "head":
        return nn.Sequential(net.features, net.avgpool, flat, net.classifier[:6]), \
            net.classifier[6]
    if tune == "classifier":
        return nn.Sequential(net.features, net.avgpool, flat), net.classifier
    if tune == "block5":  # features[24:] are block 5's three convolutions and its pool
        return net.features[:24], nn.Sequential(net.features[24:], net.avgpool, flat,
                                                net.classifier)
    raise UsageError(f"--tune must be one of {', '.join(TUNE)}")


def featurize(frozen: nn.Module, data: LabelledSet, labels: tuple[str, ...], recipe: Recipe,
              device: torch.device, say: Callable[[str, bool], None], keep: int = 0,
              batch: int = 16) -> Features:
    """Prepare every frame with the runtime's recipe and run it through the frozen layers.

    Frames that cannot be read or prepared are skipped and named (``classify`` would
    give them no decision either). Up to ``keep`` prepared tensors are kept.
    """
    import torch

    index = {k: i for i, k in enumerate(labels)}
    feats, targets, skipped, kept = [], [], [], []
    pending: list[np.ndarray] = []
    stride = max(1, len(data) // keep) if keep else 0

    def flush() -> None:
        with torch.no_grad():
            x = torch.from_numpy(np.stack(pending)).to(device)
            feats.append(frozen(x).float().cpu())
        pending.clear()

    t0 = time.perf_counter()
    for i, (path, label) in enumerate(data.items):
        try:
            tensor = prepare(path, recipe).tensor
        except FrameError as exc:
            skipped.append((path, str(exc)))
            continue
        if stride and i % stride == 0 and len(kept) < keep:
            kept.append(tensor)
        pending.append(tensor)
        targets.append(index[label])
        if len(pending) == batch:
            flush()
            say(f"  features {i + 1}/{len(data)} ({time.perf_counter() - t0:.0f} s)", False)
    if pending:
        flush()
    say(f"  features of {len(targets)} frames in {time.perf_counter() - t0:.1f} s"
        + (f"; {len(skipped)} not readable, skipped" if skipped else ""), True)
    if not targets:
        raise UsageError(f"{data.root}: no frame could be prepared")
    return Features(torch.cat(feats), torch.tensor(targets), skipped, kept)


def fit(trained: nn.Module, train: Features, val: Features, card: ModelCard, cfg: Config,
        device: torch.device, say: Callable[[str], None]) -> tuple[list[Epoch], int]:
    """Train ``trained`` on cached features; leaves it holding the best epoch's weights.

    Labels are weighted by the inverse of their frequency, so a set with ten good frames
    per bad one still learns the bad ones. The best epoch has the highest mean recall
    over labels on the validation frames (ties: the lower validation loss).
    """
    import torch
    from torch import nn

    labels = card.labels
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    counts = torch.bincount(train.targets, minlength=len(labels)).float()
    weight = (counts.sum() / (len(labels) * counts.clamp(min=1))).to(device)
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    x_val, y_val = val.features.to(device), val.targets.to(device)
    history: list[Epoch] = []
    best, best_state = None, None
    n = len(train.targets)
    for epoch in range(1, cfg.epochs + 1):
        trained.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start: start + cfg.batch_size]
            x, y = train.features[idx].to(device), train.targets[idx].to(device)
            opt.zero_grad()
            loss = nn.functional.nll_loss(trained(x), y, weight=weight)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        trained.eval()
        with torch.no_grad():
            logp = trained(x_val)
            val_loss = float(nn.functional.nll_loss(logp, y_val, weight=weight))
            said = torch.tensor([decide(p, labels, card.alerts, card.threshold).index
                                 for p in logp.exp().cpu().tolist()])
        recall = {k: float((said[val.targets == i] == i).float().mean())
                  if (val.targets == i).any() else math.nan for i, k in enumerate(labels)}
        recall = {k: v for k, v in recall.items() if not math.isnan(v)}
        fig = Epoch(epoch, total / n, val_loss, float((said == val.targets).float().mean()),
                    recall)
        history.append(fig)
        if best is None or (fig.balanced, -fig.val_loss) > (best.balanced, -best.val_loss):
            best, best_state = fig, copy.deepcopy(trained.state_dict())
        say(fig.line() + ("  *" if best is fig else ""))
    trained.load_state_dict(best_state)
    return history, best.epoch


def save_state_dict(net: nn.Module, out: Path) -> None:
    """The whole network as a bare state_dict (the upstream keys and shapes), written atomically."""
    import torch

    tmp = out.with_name(f".{out.name}.tmp")
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)


def train_model(data: LabelledSet, val: LabelledSet | None, val_fraction: float, init: str,
                card: ModelCard, out: Path, cfg: Config, err: TextIO | None = None
                ) -> tuple[dict, list[np.ndarray]]:
    """Train, write ``out``; returns the training record (for the card) and kept frames.

    The card gives the labels (output order), the recipe that prepares the frames, and
    the decision rule that scores each epoch on the validation frames.
    """
    labels = card.labels
    recipe = make_recipe(card.recipe, card.input_size)
    say = Progress(stream=err or sys.stderr).say

    import torch

    data.check_labels(labels)
    if val is None:
        data, val = data.split(val_fraction, cfg.seed)
    else:
        val.check_labels(labels)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net, parent_sha, parent_name = init_network(init, len(labels), cfg.seed, lambda s: say(s))
    net.to(device).eval()
    frozen, trained = split_network(net, cfg.tune)
    for p in net.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)
    say(f"training {cfg.tune} on {len(data)} frames ({_counts(data)}), validating on "
        f"{len(val)} ({_counts(val)}); {device.type}")
    t0 = time.perf_counter()
    train_set = featurize(frozen, data, labels, recipe, device, say, keep=KEEP_FRAMES)
    val_set = featurize(frozen, val, labels, recipe, device, say)
    t1 = time.perf_counter()
    history, best = fit(trained, train_set, val_set, card, cfg, device, say)
    t2 = time.perf_counter()
    net.eval()
    save_state_dict(net, out)
    chosen = history[best - 1]
    say(f"best epoch {best}: val accuracy {chosen.val_accuracy:.3f}; features "
        f"{t1 - t0:.1f} s, {cfg.epochs} epochs {t2 - t1:.1f} s "
        f"({(t2 - t1) / cfg.epochs:.2f} s each); wrote {out}")
    record = {"parent_sha256": parent_sha, "parent": parent_name, "tune": cfg.tune,
              "data_counts": data.counts(), "data_sha256": data.digest(),
              "val_counts": val.counts(), "val_sha256": val.digest(),
              "skipped_frames": len(train_set.skipped) + len(val_set.skipped),
              "validation": {"accuracy": round(chosen.val_accuracy, 4),
                             "loss": round(chosen.val_loss, 4),
                             "recall": {k: round(v, 4) for k, v in chosen.val_recall.items()}},
              "epochs": cfg.epochs, "best_epoch": best, "lr": cfg.lr,
              "batch_size": cfg.batch_size, "seed": cfg.seed,
              "seconds": round(t2 - t0, 1),
              "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return record, train_set.tensors


def _counts(data: LabelledSet) -> str:
    return ", ".join(f"{k} {v}" for k, v in data.counts().items())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
