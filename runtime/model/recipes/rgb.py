"""``rgb``: the mirror-wobble classifier's JPEG/PNG preparation: RGB, /255, CHW."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from frameqc.runtime.data.reader import JPEG, PNG, Frame
from frameqc.runtime.errors import FrameError
from frameqc.runtime.model.recipes.base import Prepared, Recipe, check_kind, register


@register
@dataclass(frozen=True)
class RGBRecipe(Recipe):
    """The mirror-wobble classifier's JPEG/PNG preparation: no binning, stretch or crop."""

    name: ClassVar[str] = "rgb"
    kinds: ClassVar[tuple[str, ...]] = (JPEG, PNG)
    help: ClassVar[str] = "JPEG/PNG"

    size: int = 224

    def prepare(self, frame: Frame) -> Prepared:
        import numpy as np

        check_kind(self, frame)
        t0 = time.perf_counter()
        h, w = frame.data.shape[:2]
        if (h, w) != (self.size, self.size):
            raise FrameError(f"image is {w}x{h}; the model takes {self.size}x{self.size}")
        tensor = np.ascontiguousarray(frame.data.transpose(2, 0, 1), dtype=np.float32)
        tensor /= np.float32(255.0)
        return Prepared(tensor, {"bin": 0.0, "prepare": time.perf_counter() - t0})

    def synthetic(self, index: int, seed: int) -> Frame:
        """The asinh recipe's synthetic frame as it prepares it, as a grey RGB image."""
        import numpy as np

        from frameqc.runtime.model.recipes.asinh import AsinhRecipe

        asinh = AsinhRecipe(size=self.size)
        plane = asinh.prepare(asinh.synthetic(index, seed)).tensor[0]
        return Frame(PNG, np.repeat(np.rint(plane * 255).astype(np.uint8)[:, :, None], 3,
                                    axis=2))
