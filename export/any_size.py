"""The network at any input size: torchvision's adaptive pooling in a form ONNX can carry.

torchvision's vgg16 takes any image from 32 px up: ``AdaptiveAvgPool2d((7, 7))`` pools the
last feature map (side L = input side // 32) into 7x7 windows, cell i covering rows
``floor(i*L/7)`` to ``ceil((i+1)*L/7)`` (overlapping when 7 does not divide L). The
TorchScript exporter refuses adaptive pooling unless 7 divides the size it traces, and
then fixes the size; so the exported network pools with two averaging matrices built from
the feature map's own shape inside the graph (``P_h @ X @ P_w^T``, as Einsum: the int8
quantizer leaves it in float, since its weights change with the size). The export is
checked against torchvision's own module at :data:`CHECK_SIZES`.
"""

from __future__ import annotations

import torch
from torch import nn

#: Sizes (height, width) the exported graph is checked at against torch: 7 divides the
#: feature map (224), overlapping windows (256: 8x8), not square (300 wide, 400 high),
#: 1000 (31x31) and one above 1024 (1100: 34x34).
CHECK_SIZES = ((224, 224), (256, 256), (400, 300), (1000, 1000), (1100, 1100))
CELLS = 7


def pooling_matrix(length: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(7, L)``: row i averages the window torchvision pools into cell i of a side L."""
    i = torch.arange(CELLS)
    start = torch.div(i * length, CELLS, rounding_mode="floor")
    end = torch.div((i + 1) * length + CELLS - 1, CELLS, rounding_mode="floor")
    pos = torch.arange(length)
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).to(like.dtype).unsqueeze(1)


class ExactAdaptivePool(nn.Module):
    """``AdaptiveAvgPool2d((7, 7))``, traced with the feature map's size as a graph value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = torch._shape_as_tensor(x)
        rows, cols = pooling_matrix(shape[2], x), pooling_matrix(shape[3], x)
        return torch.einsum("ih,nchj->ncij", rows, torch.einsum("nchw,jw->nchj", x, cols))


class AnySizeProbabilities(nn.Module):
    """The network of :class:`~frameqc.export.network.Probabilities` (same weights), with
    the exact pooling above in place of torchvision's: what is exported for any size."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.pool = net, ExactAdaptivePool()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.net.features(image))
        return torch.exp(self.net.classifier(torch.flatten(x, 1)))


def random_images(rng) -> dict[str, list]:
    """One random image in [0, 1] at each of CHECK_SIZES, named for the export's report."""
    import numpy as np

    return {f"random {w}x{h}": [rng.random((3, h, w), np.float32)] for h, w in CHECK_SIZES}
