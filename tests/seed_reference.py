"""An independent implementation of the seed pipeline, from UPSTREAM-NOTES.md, with torch.

It shares no code with frameqc: astropy's ``block_reduce`` bins, torch does the stretch
arithmetic in float32 (as numpy 1 did), PIL crops, torchvision makes the tensor and runs
the network. frameqc's probabilities are compared with these.
"""

from __future__ import annotations

import numpy as np
import torch
from astropy.io import fits
from astropy.nddata import block_reduce
from PIL import Image
from torch import nn
from torchvision.models import vgg16
from torchvision.transforms.functional import to_tensor


def seed_network(state_dict: dict, n_classes: int, hidden: int = 256) -> nn.Module:
    net = vgg16(weights=None)
    net.classifier[6] = nn.Sequential(nn.Linear(4096, hidden), nn.ReLU(), nn.Dropout(0.4),
                                      nn.Linear(hidden, n_classes), nn.LogSoftmax(dim=1))
    net.load_state_dict(state_dict)
    return net.eval()


def seed_image(path: str) -> np.ndarray:
    with fits.open(path) as hdul:
        return next(np.asarray(h.data) for h in hdul
                    if h.is_image and h.header.get("NAXIS") == 2 and h.data is not None)


def seed_tensor(data: np.ndarray, size: int = 224) -> torch.Tensor:
    """Bin (imbin.py -b auto), uint16, arcsinh stretch, crop, to_tensor, 3 planes."""
    factor = max(1, min(data.shape) // size)
    data = data.astype(np.float64)
    data[~np.isfinite(data)] = np.nan
    img = block_reduce(data, factor, func=np.nanmedian) if factor > 1 else data
    finite = np.isfinite(img)
    img = np.where(finite, img, np.median(img[finite]))
    img = np.clip(img, 0, 65535).astype(np.uint16)
    a = torch.asinh(torch.from_numpy(img.astype(np.float64))).to(torch.float32)
    black, white = np.percentile(a.numpy().astype(np.float64), [0.1, 99])
    scale = torch.tensor(255 / (white - black), dtype=torch.float32)
    b, w = torch.tensor(black, dtype=torch.float32), torch.tensor(white, dtype=torch.float32)
    u8 = ((torch.clamp(a, b, w) - b) * scale).to(torch.uint8).numpy()
    h, wd = u8.shape
    left, top = (wd - size) // 2, (h - size) // 2
    crop = Image.fromarray(u8).crop((left, top, left + size, top + size))
    return to_tensor(crop).repeat(3, 1, 1)


def seed_probabilities(net: nn.Module, paths: list[str]) -> np.ndarray:
    batch = torch.stack([seed_tensor(seed_image(p)) for p in paths])
    with torch.no_grad():
        return torch.exp(net(batch)).numpy()
