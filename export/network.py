"""The upstream network: torchvision vgg16 with ``classifier[6]`` replaced by a small head."""

from __future__ import annotations

import torch
from torch import nn


def build_vgg16(n_classes: int, hidden: int = 256, dropout: float = 0.4) -> nn.Module:
    """vgg16 (no pretrained weights: nothing is downloaded) with the transfer head.

    ``Linear(4096, hidden) -> ReLU -> Dropout -> Linear(hidden, n) -> LogSoftmax``,
    as in docs/upstream.md; dropout does nothing at inference.
    """
    from torchvision.models import vgg16

    net = vgg16(weights=None)
    net.classifier[6] = nn.Sequential(nn.Linear(4096, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, n_classes), nn.LogSoftmax(dim=1))
    return net.eval()


class Probabilities(nn.Module):
    """``exp`` of the network's LogSoftmax: the probabilities the upstream classifier printed."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.net(image))
