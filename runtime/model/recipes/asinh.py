"""``asinh``: the shutter classifier's FITS preparation.

Median binning, the uint16 cast, an arcsinh stretch between the 0.1 and 99 percentiles
computed with numpy 1's float32 arithmetic, a truncating uint8 cast, a centre crop, /255,
three equal planes. numpy is imported where frames are prepared (see ``base``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from frameqc.runtime.data.reader import FITS, Frame
from frameqc.runtime.errors import FrameError
from frameqc.runtime.model.card import Binning, parse_binning
from frameqc.runtime.model.recipes.base import Prepared, Recipe, check_kind, register

if TYPE_CHECKING:
    import numpy as np

#: Synthetic frames are made at 681 px (binned 3x3 to 227, like a binned IO:O frame).
SYNTHETIC_SIZE = 681


def to_uint16(data: np.ndarray) -> np.ndarray:
    """The upstream uint16 cast, made safe: clip to [0, 65535], non-finite -> median of finite."""
    import numpy as np

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
    import numpy as np

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


@register(default=True)
@dataclass(frozen=True)
class AsinhRecipe(Recipe):
    """The shutter classifier's FITS preparation."""

    name: ClassVar[str] = "asinh"
    kinds: ClassVar[tuple[str, ...]] = (FITS,)
    help: ClassVar[str] = "FITS"

    size: int = 224
    binning: Binning = "auto"
    black_percentile: float = 0.1
    white_percentile: float = 99.0

    @classmethod
    def from_card(cls, params: dict[str, Any], size: int, binning: Binning | None
                  ) -> AsinhRecipe:
        if binning is not None:
            params["binning"] = binning
        params["binning"] = parse_binning(params.get("binning", "auto"))
        return cls(size=size, **params)

    def bin_factor(self, shape: tuple[int, ...]) -> int:
        from frameqc.runtime.data.binning import auto_factor

        if self.binning == "auto":
            return auto_factor(shape, self.size)
        if self.binning == "none":
            return 1
        return int(self.binning)

    def prepare(self, frame: Frame) -> Prepared:
        import numpy as np

        from frameqc.runtime.data.binning import median_bin

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

    def synthetic(self, index: int, seed: int) -> Frame:
        """A synthetic binned-IO:O-like frame, the three kinds (good, shutter, wobble) in turn."""
        from frameqc.runtime.data.synthetic import KINDS, make_frame

        return Frame(FITS, make_frame(KINDS[index % len(KINDS)], SYNTHETIC_SIZE, seed + index))
