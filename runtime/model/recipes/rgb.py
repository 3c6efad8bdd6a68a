"""``rgb``: the mirror-wobble classifier's JPEG/PNG preparation: RGB, /255, CHW.

At the image's own size, as the upstream server ran it ("we cannot bin because it loses
too much detail"): its network pools any feature map to 7x7, so it takes any image from
32 px up. A model exported before that took 224x224 only, and says so (``size``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from frameqc.runtime.data.reader import IMAGE_PIXELS_ENV, JPEG, PNG, Frame, max_image_pixels
from frameqc.runtime.errors import FrameError
from frameqc.runtime.model.card import MIN_SIDE
from frameqc.runtime.model.recipes.base import Prepared, Recipe, check_kind, register

#: The sides of the synthetic images (export calibration without --calibration): 224, and
#: feature maps 7 does not divide (8x8, 10x10), so the int8 gate sees overlapping windows.
SYNTHETIC_SIDES = (224, 256, 320)


@register
@dataclass(frozen=True)
class RGBRecipe(Recipe):
    """The mirror-wobble classifier's JPEG/PNG preparation: no binning, stretch or crop."""

    name: ClassVar[str] = "rgb"
    kinds: ClassVar[tuple[str, ...]] = (JPEG, PNG)
    help: ClassVar[str] = "JPEG/PNG"
    any_size: ClassVar[bool] = True

    size: int | None = None

    def check_size(self, h: int, w: int) -> None:
        """Refuse, in one line, an image the network cannot take or memory cannot hold."""
        if self.size is not None:
            if (h, w) != (self.size, self.size):
                raise FrameError(f"image is {w}x{h}; the model takes {self.size}x{self.size} "
                                 "(a model exported by this frameqc takes any size)")
            return
        if min(h, w) < MIN_SIDE:
            raise FrameError(f"image is {w}x{h}; the model needs at least "
                             f"{MIN_SIDE}x{MIN_SIDE}")
        limit = max_image_pixels()
        if h * w > limit:
            raise FrameError(f"image of {w}x{h} pixels is over the limit of {limit} pixels the "
                             f"network runs at (${IMAGE_PIXELS_ENV}; about 0.6 GB of memory "
                             "per megapixel)")

    def prepare(self, frame: Frame) -> Prepared:
        import numpy as np

        check_kind(self, frame)
        t0 = time.perf_counter()
        self.check_size(*frame.data.shape[:2])
        tensor = np.ascontiguousarray(frame.data.transpose(2, 0, 1), dtype=np.float32)
        tensor /= np.float32(255.0)
        return Prepared(tensor, {"bin": 0.0, "prepare": time.perf_counter() - t0})

    def synthetic(self, index: int, seed: int) -> Frame:
        """The asinh recipe's synthetic frame as it prepares it, as a grey RGB image (at
        the model's size, else at SYNTHETIC_SIDES in turn)."""
        import numpy as np

        from frameqc.runtime.model.recipes.asinh import AsinhRecipe

        side = self.size or SYNTHETIC_SIDES[(index // 3) % len(SYNTHETIC_SIDES)]
        asinh = AsinhRecipe(size=side)
        plane = asinh.prepare(asinh.synthetic(index, seed)).tensor[0]
        return Frame(PNG, np.repeat(np.rint(plane * 255).astype(np.uint8)[:, :, None], 3,
                                    axis=2))
