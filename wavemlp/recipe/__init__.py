"""Recipes: YAML files -> one validated, typed ``Recipe`` that train, render and image builds share.

Login-node side: imports yaml and the standard library only (never torch); every other package reads
recipes through this one.
"""

from .loader import (
    LoadedRecipe,
    RecipeError,
    dump_recipe,
    find_recipe,
    load_recipe,
    parse_recipe,
    shipped_recipes,
    validate,
)
from .schema import Recipe, seed_flag_table
from .site import NO_SITE, LoadedSite, SiteCfg, available_sites, load_site

__all__ = [
    "NO_SITE",
    "LoadedRecipe",
    "LoadedSite",
    "SiteCfg",
    "available_sites",
    "load_site",
    "Recipe",
    "RecipeError",
    "dump_recipe",
    "find_recipe",
    "load_recipe",
    "parse_recipe",
    "seed_flag_table",
    "shipped_recipes",
    "validate",
]
