"""Preparation recipes: a frame as read -> the float32 ``(3, S, S)`` tensor the network saw.

Two recipes, each the exact preparation one of the upstream classifiers was trained with
(``docs/upstream.md``). The export step imports this module to validate and calibrate,
so what is validated is what runs.

``asinh``
    The shutter classifier's FITS preparation: median binning, the uint16 cast,
    an arcsinh stretch between the 0.1 and 99 percentiles computed with numpy 1's
    float32 arithmetic, a truncating uint8 cast, a centre crop, /255, three equal planes.
``rgb``
    The mirror-wobble classifier's JPEG/PNG preparation: RGB, /255, CHW.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from frameqc.runtime.data.binning import auto_factor, median_bin
from frameqc.runtime.data.reader import FITS, JPEG, PNG, Frame
from frameqc.runtime.errors import FrameError, UsageError
from frameqc.runtime.model.card import RECIPE_NAMES, Binning, parse_binning


def to_uint16(data: np.ndarray) -> np.ndarray:
    """The upstream uint16 cast, made safe: clip to [0, 65535], non-finite -> median of finite."""
    if data.dtype == np.uint16:
        return data
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.any():
            raise FrameError("frame has no finite pixel")
        if not finite.all():
            data = np.where(finite, data, np.median(data[finite]))
    return np.clip(data, 0, 65535).astype(np.uint16)


def asinh_stretch(image: np.ndarray, black_percentile: float = 0.1,
                  white_percentile: float = 99.0) -> np.ndarray:
    """The upstream classifier's arcsinh stretch of a uint16 image to uint8, bit for bit.

    The upstream classifier ran under numpy 1, where the float64 percentiles and scale were
    cast down to float32 before the clip, subtraction and product. numpy 2 would do these
    in float64 and move about 1 % of the pixels by one grey level, so the casts are explicit.
    """
    a = np.arcsinh(image, dtype=np.float32)
    black, white = np.percentile(a.astype(np.float64), [black_percentile, white_percentile])
    if not white > black:
        raise FrameError("flat frame: nothing to stretch (white point <= black point)")
    b, w = np.float32(black), np.float32(white)
    scale = np.float32(255.0 / (white - black))
    return ((np.clip(a, b, w) - b) * scale).astype(np.uint8)


def centre_crop(plane: np.ndarray, size: int) -> np.ndarray:
    """``size`` square from the centre: left = (w - size) // 2, top = (h - size) // 2."""
    h, w = plane.shape[:2]
    if h < size or w < size:
        raise FrameError(f"frame is {w}x{h} after binning; the model needs at least "
                         f"{size}x{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return plane[top: top + size, left: left + size]


@dataclass
class Prepared:
    """A prepared frame: the network's input and the seconds each step took."""

    tensor: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    date_obs: str | None = None  # the frame's DATE-OBS, carried to the result

    def preview(self) -> np.ndarray:
        """What the network saw, as a uint8 image (H, W) or (H, W, 3)."""
        img = np.rint(self.tensor * 255.0).astype(np.uint8)
        return img[0] if np.array_equal(img[0], img[-1]) and np.array_equal(img[0], img[1]) \
            else img.transpose(1, 2, 0)


@dataclass(frozen=True)
class AsinhRecipe:
    """The shutter classifier's FITS preparation."""

    size: int = 224
    binning: Binning = "auto"
    black_percentile: float = 0.1
    white_percentile: float = 99.0
    name: str = "asinh"
    kinds: tuple[str, ...] = (FITS,)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "binning": self.binning,
                "black_percentile": self.black_percentile,
                "white_percentile": self.white_percentile}

    def bin_factor(self, shape: tuple[int, ...]) -> int:
        if self.binning == "auto":
            return auto_factor(shape, self.size)
        if self.binning == "none":
            return 1
        return int(self.binning)

    def prepare(self, frame: Frame) -> Prepared:
        check_kind(self, frame)
        t0 = time.perf_counter()
        try:
            binned = median_bin(frame.data, self.bin_factor(frame.data.shape))
        except ValueError as exc:
            raise FrameError(str(exc)) from None
        t1 = time.perf_counter()
        if binned.shape[0] < self.size or binned.shape[1] < self.size:
            raise FrameError(f"frame is {binned.shape[1]}x{binned.shape[0]} after binning; "
                             f"the model needs at least {self.size}x{self.size}")
        plane = centre_crop(asinh_stretch(to_uint16(binned), self.black_percentile,
                                          self.white_percentile), self.size)
        tensor = np.empty((3, self.size, self.size), np.float32)
        tensor[:] = plane.astype(np.float32) / np.float32(255.0)
        t2 = time.perf_counter()
        return Prepared(tensor, {"bin": t1 - t0, "prepare": t2 - t1})


@dataclass(frozen=True)
class RGBRecipe:
    """The mirror-wobble classifier's JPEG/PNG preparation: no binning, stretch or crop."""

    size: int = 224
    name: str = "rgb"
    kinds: tuple[str, ...] = (JPEG, PNG)

    def params(self) -> dict[str, Any]:
        return {"name": self.name}

    def prepare(self, frame: Frame) -> Prepared:
        check_kind(self, frame)
        t0 = time.perf_counter()
        h, w = frame.data.shape[:2]
        if (h, w) != (self.size, self.size):
            raise FrameError(f"image is {w}x{h}; the model takes {self.size}x{self.size}")
        tensor = np.ascontiguousarray(frame.data.transpose(2, 0, 1), dtype=np.float32)
        tensor /= np.float32(255.0)
        return Prepared(tensor, {"bin": 0.0, "prepare": time.perf_counter() - t0})


Recipe = AsinhRecipe | RGBRecipe
RECIPES = dict(zip(RECIPE_NAMES, (AsinhRecipe, RGBRecipe), strict=True))


def check_kind(recipe: Recipe, frame: Frame) -> None:
    if frame.kind not in recipe.kinds:
        raise FrameError(f"a {frame.kind.upper()} file cannot go to a model whose recipe "
                         f"'{recipe.name}' takes {'/'.join(k.upper() for k in recipe.kinds)}")


def make_recipe(params: dict[str, Any], size: int = 224, binning: Binning | None = None) -> Recipe:
    """Build a recipe from the parameters stored in a model card."""
    params = dict(params)
    name = params.pop("name", None)
    if name not in RECIPES:
        raise UsageError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    if name == "asinh":
        if binning is not None:
            params["binning"] = binning
        params["binning"] = parse_binning(params.get("binning", "auto"))
        return AsinhRecipe(size=size, **params)
    return RGBRecipe(size=size)
