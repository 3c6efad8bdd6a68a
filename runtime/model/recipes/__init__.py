"""Preparation recipes: a frame as read -> the float32 tensor the network saw.

Each recipe is the exact preparation one of the upstream classifiers was trained with
(``docs/upstream.md``), in a module of its own that registers itself
(:mod:`~frameqc.runtime.model.recipes.base`). The export step imports these to validate
and calibrate, so what is validated is what runs.

:mod:`~frameqc.runtime.model.recipes.asinh`
    The shutter classifier's FITS preparation.
:mod:`~frameqc.runtime.model.recipes.rgb`
    The mirror-wobble classifier's JPEG/PNG preparation.

A new recipe is a module here plus its line below; nothing else names the recipes.
"""

from frameqc.runtime.model.card import Binning, parse_binning

# The registered recipes, in the order help texts list them (each module registers itself).
from frameqc.runtime.model.recipes import asinh, rgb  # noqa: F401
from frameqc.runtime.model.recipes.asinh import (
    AsinhRecipe,
    asinh_stretch,
    centre_crop,
    to_uint16,
)
from frameqc.runtime.model.recipes.base import (
    Prepared,
    Recipe,
    check_kind,
    default_recipe,
    make_recipe,
    recipe_class,
    recipe_classes,
    recipe_for,
    recipe_help,
    recipe_names,
    register,
)
from frameqc.runtime.model.recipes.rgb import RGBRecipe

__all__ = ["AsinhRecipe", "Binning", "Prepared", "RGBRecipe", "Recipe", "asinh_stretch",
           "centre_crop", "check_kind", "default_recipe", "make_recipe", "parse_binning",
           "recipe_class", "recipe_classes", "recipe_for", "recipe_help", "recipe_names",
           "register", "to_uint16"]
