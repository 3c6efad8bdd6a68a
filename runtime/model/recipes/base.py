"""The recipe registry: what every recipe is, and the one place a recipe is found by name.

A recipe turns a frame as read into the float32 ``(3, H, W)`` tensor its network saw. Each
recipe is a class in a module of its own that registers itself with :func:`register` and
owns its parameters (its dataclass fields, with their defaults), the frames it takes,
its help text and its synthetic frames for calibration. The model card, the ``seen/``
thumbnail cache, the export's calibration and ``export --help`` read this registry, so
a new recipe is its module plus its line in :mod:`frameqc.runtime.model.recipes`.

Nothing here imports numpy: a card can check its recipe's name on the light path.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from frameqc.runtime.errors import FrameError, UsageError

if TYPE_CHECKING:
    import numpy as np

    from frameqc.runtime.data.reader import Frame
    from frameqc.runtime.model.card import Binning, ModelCard


@dataclass
class Prepared:
    """A prepared frame: the network's input and the seconds each step took."""

    tensor: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    date_obs: str | None = None  # the frame's DATE-OBS, carried to the result

    def preview(self) -> np.ndarray:
        """What the network saw, as a uint8 image (H, W) or (H, W, 3)."""
        import numpy as np

        img = np.rint(self.tensor * 255.0).astype(np.uint8)
        return img[0] if np.array_equal(img[0], img[-1]) and np.array_equal(img[0], img[1]) \
            else img.transpose(1, 2, 0)


class Recipe(ABC):
    """A preparation: subclasses are frozen dataclasses whose fields are its parameters.

    ``name`` is what a card stores, ``kinds`` the frames it takes (reader kinds), ``help``
    what ``export --help`` says of it. ``size`` is the side of the square the network
    takes; a recipe whose ``any_size`` is true takes ``size=None`` too (an exported graph
    of any height and width: each frame at its own size).
    """

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]
    help: ClassVar[str]
    any_size: ClassVar[bool] = False
    size: int | None

    def params(self) -> dict[str, Any]:
        """What the card keeps: the name and every parameter but the size."""
        return {"name": self.name, **{f.name: getattr(self, f.name)
                                      for f in dataclasses.fields(self) if f.name != "size"}}

    @classmethod
    def from_card(cls, params: dict[str, Any], size: int, binning: Binning | None) -> Recipe:
        """The recipe a card's parameters describe; ``binning`` is ``--bin`` (if it applies)."""
        return cls(size=size, **params)

    @abstractmethod
    def prepare(self, frame: Frame) -> Prepared:
        """The network's input for ``frame``; FrameError when the frame cannot be prepared."""

    @abstractmethod
    def synthetic(self, index: int, seed: int) -> Frame:
        """The ``index``-th synthetic frame this recipe takes (export calibration)."""


_REGISTRY: dict[str, type[Recipe]] = {}
_DEFAULT: list[str] = []


def register(cls: type[Recipe] | None = None, *, default: bool = False
             ) -> type[Recipe] | Callable[[type[Recipe]], type[Recipe]]:
    """Class decorator: make a recipe known by its ``name`` (``default``: a card's default)."""
    def add(c: type[Recipe]) -> type[Recipe]:
        if c.name in _REGISTRY and _REGISTRY[c.name] is not c:
            raise ValueError(f"recipe {c.name!r} is registered twice")
        _REGISTRY[c.name] = c
        if default:
            _DEFAULT[:] = [c.name]
        return c
    return add if cls is None else add(cls)


def recipe_names() -> tuple[str, ...]:
    """The registered recipes' names, in registration order."""
    return tuple(_REGISTRY)


def recipe_classes() -> tuple[type[Recipe], ...]:
    return tuple(_REGISTRY.values())


def default_recipe() -> str:
    """The recipe a card names when it names none."""
    return _DEFAULT[0]


def recipe_class(name: object) -> type[Recipe]:
    """The recipe called ``name``; the one check of an unknown recipe."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UsageError(f"unknown recipe {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def recipe_help() -> str:
    """``export --recipe``'s help: each recipe's own text, the default said."""
    return "preparation: " + " or ".join(
        f"{c.name} ({c.help}{', default' if c.name == default_recipe() else ''})"
        for c in recipe_classes())


def make_recipe(params: dict[str, Any], size: int | None = 224, binning: Binning | None = None
                ) -> Recipe:
    """Build a recipe from the parameters stored in a model card."""
    params = dict(params)
    return recipe_class(params.pop("name", None)).from_card(params, size, binning)


def recipe_for(card: ModelCard, binning: Binning | None = None) -> Recipe:
    """The recipe a model runs: the card's, at its one size or (``input_sizes`` any) any."""
    size = None if card.input_sizes == "any" else card.input_size
    return make_recipe(card.recipe, size, binning)


def check_kind(recipe: Recipe, frame: Frame) -> None:
    if frame.kind not in recipe.kinds:
        raise FrameError(f"a {frame.kind.upper()} file cannot go to a model whose recipe "
                         f"'{recipe.name}' takes {'/'.join(k.upper() for k in recipe.kinds)}")
