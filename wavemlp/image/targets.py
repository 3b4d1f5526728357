"""Image targets: the shipped recipes that describe an image (a non-empty ``image.tag``).

The recipes are the one list of targets; the Dockerfile and base image a recipe leaves empty come
from its vendor's entry in ``wavemlp.vendors``. No docker and no torch here: the command line and the
tests import this module on hosts that have neither.
"""

from pathlib import Path
from typing import List, Optional, Tuple

from ..errors import KitError
from ..recipe import LoadedRecipe, Recipe, load_recipe, shipped_recipes
from ..vendors import dockerfile_vendor, dockerfiles, recipe_vendor


def _shipped(name: str) -> Path:
    # By path: a file called like a target in the current folder must not stand in for the shipped recipe.
    return shipped_recipes()[name]


def image_targets() -> List[str]:
    """The names of the shipped recipes with an image, sorted."""
    return sorted(name for name, path in shipped_recipes().items() if load_recipe(path).recipe.image.tag)


def check_target(name: str, where: str = "") -> LoadedRecipe:
    """The recipe of image target ``name``, or a one-line KitError listing the targets.

    ``where`` names what the user typed it into (a flag), and leads the message.
    """
    targets = image_targets()
    if name not in targets:
        raise KitError(
            "{}{!r} is not an image target; targets: {}".format(where + ": " if where else "", name, ", ".join(targets))
        )
    return load_recipe(_shipped(name))


def image_settings(recipe: Recipe, dockerfile: Optional[str] = None, base: Optional[str] = None) -> Tuple[str, str]:
    """(Dockerfile kind, base image): the caller's, else the recipe's, else its vendor's defaults.

    A base left to the defaults follows the Dockerfile: with another Dockerfile than the vendor's, it is
    the base of the vendor that Dockerfile belongs to.
    """
    vendor = recipe_vendor(recipe.hardware.vendor, recipe.hardware.device)
    kind = dockerfile or recipe.image.dockerfile or vendor.dockerfile
    if kind not in dockerfiles():
        raise KitError("unknown Dockerfile {!r} (known: {})".format(kind, ", ".join(dockerfiles())))
    if base:
        return kind, base
    if recipe.image.base:
        return kind, recipe.image.base
    return kind, vendor.base_image if kind == vendor.dockerfile else dockerfile_vendor(kind).base_image
