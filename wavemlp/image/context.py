"""The build context of the images: the checkout itself, or one staged from an installed kit.

An installed wheel carries the package and, under ``wavemlp/_kit``, the recipes, templates, Dockerfiles
and pyproject.toml: copied into one folder in the checkout's layout, they are a complete context.
Standard library only: runs on the host that builds.
"""

import os
import shutil
from pathlib import Path

from .. import __version__
from ..resources import PACKAGE_DIR, cache_dir, kit_root, repo_root


def build_context() -> Path:
    """The checkout when running from one; else a context staged once per kit version in the user's cache."""
    checkout = repo_root()
    if checkout is not None:
        return checkout
    target = cache_dir() / "build-context-{}".format(__version__)
    if (target / "pyproject.toml").is_file() and (target / "wavemlp").is_dir():
        return target
    staging = target.with_name(target.name + ".tmp-{}".format(os.getpid()))
    shutil.rmtree(str(staging), ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_kit")
    shutil.copytree(str(PACKAGE_DIR), str(staging / "wavemlp"), ignore=ignore)
    for item in kit_root().iterdir():
        dest = staging / item.name
        if item.is_dir():
            shutil.copytree(str(item), str(dest), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(str(item), str(dest))
    # Two builds staging at once: the first rename wins, the other's copy is the same and is dropped.
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(str(staging), ignore_errors=True)
    return target
