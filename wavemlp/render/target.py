"""What the launch and sbatch scripts need from a recipe: the trainer's arguments, env, vendor, image.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import os
import posixpath
import re
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

from ..recipe import (
    NO_SITE,
    LoadedRecipe,
    LoadedSite,
    Recipe,
    dump_recipe,
    find_recipe,
    load_recipe,
    load_site,
    shipped_recipes,
)
from ..resources import PRETRAINED_DIR_ENV, cache_dir
from ..vendors import recipe_vendor
from .quoting import RenderError, quote

# Variables a shell reads as code or syntax: exported from a recipe they would run or reshape commands
# (bash evaluates BASH_ENV, and PS4 under xtrace, with command substitution).
_SHELL_OWNED = {"ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "GLOBIGNORE", "PS1", "PS2", "PS4", "PROMPT_COMMAND",
                "POSIXLY_CORRECT"}
# Set per process by torchrun or Slurm: a recipe value would be overwritten or, worse, believed.
_LAUNCHER_OWNED = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                   "ROLE_RANK", "ROLE_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"}
_LAUNCHER_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "TORCHELASTIC_")
# What the batch shell and the container runtimes need to find programs, libraries and the user's home.
_PROCESS_OWNED = {"PATH", "HOME", "SHELL", "USER", "PWD", "OLDPWD"}
POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Target(NamedTuple):
    loaded: LoadedRecipe
    ref: str  # the recipe as the user named it (shipped name or absolute path): for comments and names
    sets: List[str]
    vendor: str  # a key of wavemlp.vendors.VENDORS
    site: LoadedSite = NO_SITE

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def env(self) -> Dict[str, str]:
        return dict(sorted(self.recipe.env.items()))

    def resolved_text(self) -> str:
        """The resolved recipe as a file: every value the job runs with, no ``extends``, no ``--set``."""
        site = ["--site " + str(self.site.path)] if self.site.path else []
        origin = " ".join([self.ref] + site + ["--set " + s for s in self.sets])
        header = (
            "# Resolved by wavemlp-kit from: {}\n"
            "# The job trains from this file: render again rather than edit it.\n".format(origin.replace("\n", " "))
        )
        return header + dump_recipe(self.recipe)

    def write_resolved(self, path) -> Path:
        """Write the resolved recipe atomically (a job reading it never sees half a file); its absolute path."""
        path = Path(path).absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".{}.tmp{}".format(path.name, os.getpid()))
        tmp.write_text(self.resolved_text(), encoding="utf-8")
        os.replace(str(tmp), str(path))
        return path

    @staticmethod
    def train_args(recipe_path) -> List[List[str]]:
        """``train`` arguments up to the run folder: the resolved recipe file and nothing else, so that
        every rank runs exactly what was checked at render time (the scripts add the run folder)."""
        return [["--recipe", str(recipe_path)]]

    def run_name(self) -> str:
        """``<train.output>/<train.experiment or recipe name>``: the default run folder, or its prefix."""
        t = self.recipe.train
        return posixpath.join(t.output, t.experiment or self.name)

    def image_ref(self) -> str:
        i = self.recipe.image
        return "{}:{}".format(i.name, i.tag) if i.tag else i.name


def recipe_ref(given: str, loaded: LoadedRecipe) -> str:
    """A shipped recipe by its name (images carry their own copy); any other by its absolute path."""
    path = loaded.chain[-1]
    shipped = shipped_recipes()
    if shipped.get(loaded.name) == path:
        return loaded.name
    return str(Path(path).resolve())


def check_env(env: Dict[str, str], source: str = "") -> None:
    """Names a script may export: POSIX, and not read by the shell, the loader or the launcher."""
    prefix = source + ": " if source else ""
    for name in env:
        if not POSIX_NAME.fullmatch(name):
            raise RenderError("{}env.{}: not a POSIX variable name (letters, digits, _)".format(prefix, quote(name)))
        if name in _PROCESS_OWNED or name.startswith("LD_"):
            raise RenderError(
                "{}env.{}: the shell, the loader and the container runtime own this variable; "
                "set it in the image or the site's modules, not in a recipe".format(prefix, name)
            )
        if name in _SHELL_OWNED or name.startswith("BASH_"):
            raise RenderError(
                "{}env.{}: the shell reads this variable as code or syntax; set it outside the recipe".format(
                    prefix, name)
            )
        if name in _LAUNCHER_OWNED or name.startswith(_LAUNCHER_PREFIXES):
            raise RenderError("{}env.{}: torchrun and Slurm set this variable for every process".format(prefix, name))


def vendor_of(recipe: Recipe) -> str:
    return recipe_vendor(recipe.hardware.vendor, recipe.hardware.device).name


def load_target(ref: str, sets: Sequence[str] = (), site: Optional[str] = None) -> Target:
    """Recipe + site + ``--set``, resolved once: what every script of the job runs with."""
    find_recipe(ref)  # the not-found error, before anything else
    loaded_site = load_site(site)
    overlay = {}
    if loaded_site.path is not None:
        check_env(loaded_site.site.env, str(loaded_site.path))
        env = loaded_site.site.env_overlay()
        overlay = {"env": env} if env else {}
        gpu_request = loaded_site.site.gpu_request
        if gpu_request:
            overlay["cluster"] = {"gpu_request": gpu_request}
        if loaded_site.site.mem:
            overlay.setdefault("cluster", {})["mem"] = loaded_site.site.mem
    loaded = load_recipe(ref, list(sets), overlay)
    _fix_paths(loaded.recipe)
    check_env(loaded.recipe.env)
    return Target(loaded, recipe_ref(ref, loaded), list(sets), vendor_of(loaded.recipe), loaded_site)


def _fix_paths(recipe: Recipe) -> None:
    """Paths as every node and container sees them, whatever folder the job is submitted from: absolute,
    and the released weights' folder named, so that a container can be given it."""
    for section, key in (("data", "path"), ("model", "initial_checkpoint")):
        cfg = getattr(recipe, section)
        value = getattr(cfg, key)
        if value:
            setattr(cfg, key, os.path.abspath(os.path.expanduser(value)))
    if recipe.model.pretrained and PRETRAINED_DIR_ENV not in recipe.env:
        recipe.env[PRETRAINED_DIR_ENV] = os.environ.get(PRETRAINED_DIR_ENV) or str(cache_dir())


def missing_paths(recipe: Recipe) -> List[str]:
    """Warnings for paths this host does not see (the nodes might: a cluster mount the login node lacks)."""
    out = []
    for key, value in (("data.path", recipe.data.path), ("model.initial_checkpoint", recipe.model.initial_checkpoint),
                       ("env." + PRETRAINED_DIR_ENV, recipe.env.get(PRETRAINED_DIR_ENV, ""))):
        if value and not os.path.exists(value):
            out.append("{}: {} does not exist on this host; the job's nodes must see it".format(key, value))
    return out


def check_mounts(mounts: Sequence[str], source: str) -> List[str]:
    """``SRC[:DST[:OPTS]]`` strings as ``SRC:DST[:OPTS]`` (docker reads a lone path as a new volume);
    a comma would split one into two for pyxis, so it is refused."""
    out = []
    for m in mounts:
        if not m or m.startswith(":") or re.search(r"[,\x00-\x1f\x7f]", m):
            raise RenderError(
                "{}: {} is not a mount (SRC[:DST[:OPTIONS]], no commas or control characters)".format(source, quote(m))
            )
        parts = m.split(":")
        if len(parts) > 3 or not all(parts[:2]):
            raise RenderError("{}: {} is not a mount (SRC[:DST[:OPTIONS]])".format(source, quote(m)))
        out.append(m if len(parts) > 1 else "{0}:{0}".format(m))
    return out
