"""Synthetic IO:O frames: sky, read noise, stars, and the two faults the classifiers spot.

Used where real frames are not at hand: the demo, the export's validation and int8
calibration when no frames are given, and the tests. Frames are 2x2-binned IO:O-like:
uint16 around a bias level, Poisson-ish sky, Gaussian stars with a power-law flux.

``good``
    a clean exposure.
``shutter``
    a shutter failure: part of the field (a band from one edge) got a fraction of the
    exposure, so it is dim and its stars are faint.
``wobble``
    a wobbling primary mirror: every star is smeared along one track.
"""

from __future__ import annotations

import numpy as np

KINDS = ("good", "shutter", "wobble")
BIAS = 600.0


def _stamp_star(img: np.ndarray, y: float, x: float, flux: float, sigma: float) -> None:
    r = int(4 * sigma) + 1
    iy, ix = int(y), int(x)
    y0, y1 = max(iy - r, 0), min(iy + r + 1, img.shape[0])
    x0, x1 = max(ix - r, 0), min(ix + r + 1, img.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1)[:, None] - y
    xx = np.arange(x0, x1)[None, :] - x
    img[y0:y1, x0:x1] += flux / (2 * np.pi * sigma**2) * np.exp(-(yy**2 + xx**2) / (2 * sigma**2))


def make_frame(kind: str = "good", size: int | tuple[int, int] = 2048,
               rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One synthetic frame of ``kind``, ``uint16`` of shape ``size`` (int or (h, w)).

    Star positions, sky level, seeing and the fault's geometry are drawn from ``rng``,
    so a seed gives the same frame every time.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    rng = np.random.default_rng(rng)
    h, w = (size, size) if isinstance(size, int) else size
    scale = min(h, w) / 2048.0  # star sizes and counts follow the frame's pixel scale
    sky = rng.uniform(200, 3000)
    sigma = max(rng.uniform(1.2, 2.2) * scale, 0.6)
    img = np.zeros((h, w), np.float64)
    n_stars = int(rng.uniform(150, 500) * (h * w) / 2048**2) + 20
    ys, xs = rng.uniform(0, h, n_stars), rng.uniform(0, w, n_stars)
    fluxes = 3e3 * (1 - rng.uniform(0, 0.999, n_stars)) ** -1.2 * scale**2 + 500 * scale**2
    if kind == "wobble":
        length = rng.uniform(40, 90) * scale
        angle = rng.uniform(0, np.pi)
        bend = rng.uniform(-0.4, 0.4)
        steps = max(int(length / max(sigma, 0.5)), 4)
        track = np.linspace(-0.5, 0.5, steps)
        dy = length * (np.sin(angle) * track + bend * track**2)
        dx = length * np.cos(angle) * track
        for y, x, f in zip(ys, xs, fluxes, strict=True):
            for oy, ox in zip(dy, dx, strict=True):
                _stamp_star(img, y + oy, x + ox, f / steps, sigma)
    else:
        for y, x, f in zip(ys, xs, fluxes, strict=True):
            _stamp_star(img, y, x, f, sigma)
    img += sky + 30.0 * np.sin(np.linspace(0, np.pi, w))[None, :] * rng.uniform(-1, 1)
    if kind == "shutter":
        exposed = rng.uniform(0.02, 0.3)
        edge = int(rng.uniform(0.3, 0.7) * (h if rng.random() < 0.5 else w))
        ramp = np.clip((np.arange(max(h, w)) - edge) / (0.05 * max(h, w)), 0, 1)
        factor = exposed + (1 - exposed) * ramp
        if rng.random() < 0.5:
            img *= factor[:h, None] if rng.random() < 0.5 else factor[:h][::-1, None]
        else:
            img *= factor[None, :w] if rng.random() < 0.5 else factor[:w][::-1][None, :]
    img = rng.poisson(np.clip(img, 0, None)).astype(np.float64)
    img += BIAS + rng.normal(0, 8.0, (h, w))
    return np.clip(img, 0, 65535).astype(np.uint16)


def write_fits(path, data: np.ndarray, **header) -> None:
    """Write a frame as IO:O does: 16-bit unsigned with BZERO = 32768."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path, overwrite=True)
