"""The upstream one-shot, as its cron line ran it: torch, vgg16, the state_dict, one frame.

Reconstructed from docs/upstream.md for the benchmark's baseline (needs the export
extra). The upstream classifier built ``vgg16(pretrained=True)`` first, downloading
ImageNet weights; that download is left out here (``weights=None``), which flatters it.

Usage: python bench/upstream_oneshot.py WEIGHTS.pt N_CLASSES FRAME_bin9.fits
"""

import sys

import numpy as np
import torch
from astropy.io import fits
from PIL import Image
from torch import nn
from torchvision import models, transforms


def main(weights: str, n_classes: int, path: str) -> None:
    model = models.vgg16(weights=None)
    model.classifier[6] = nn.Sequential(nn.Linear(4096, 256), nn.ReLU(), nn.Dropout(0.4),
                                        nn.Linear(256, n_classes), nn.LogSoftmax(dim=1))
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    img = fits.getdata(path).astype(np.uint16)
    a = np.arcsinh(img)
    black, white = np.percentile(a.astype(np.float64), 0.1), np.percentile(a.astype(np.float64), 99)
    a = (np.clip(a, np.float32(black), np.float32(white)) - np.float32(black)) \
        * np.float32(255 / (white - black))
    h, w = a.shape
    left, top = (w - 224) // 2, (h - 224) // 2
    crop = Image.fromarray(a.astype(np.uint8)).crop((left, top, left + 224, top + 224))
    x = transforms.ToTensor()(crop).repeat(3, 1, 1)[None]
    with torch.no_grad():
        p = torch.exp(model(x))[0]
    i = int(p.argmax())
    print(i, round(float(p[i]), 3), path)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
