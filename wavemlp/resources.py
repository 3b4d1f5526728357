"""Where the kit's own files are: recipes, templates, Dockerfiles, in a checkout and in an installed wheel.

A checkout keeps them at the top of the repository, where users look. The package links them under
``wavemlp/_kit`` with the same layout, so a wheel carries them and nothing here needs to know which it is.
Standard library only: runs on login nodes.
"""

import os
from pathlib import Path
from typing import Optional

PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT = PACKAGE_DIR.parent
RESOURCES = ("recipes", "launch", "slurm", "docker")


def repo_root() -> Optional[Path]:
    """The source checkout holding this package, or None for an installed wheel."""
    return _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else None


def kit_root() -> Path:
    """The folder holding ``recipes/``, ``launch/``, ``slurm/``, ``docker/`` and ``pyproject.toml``."""
    return repo_root() or PACKAGE_DIR / "_kit"


def resource_dir(name: str) -> Path:
    """The folder ``recipes``, ``launch``, ``slurm`` or ``docker``."""
    if name not in RESOURCES:
        raise KeyError(name)
    return (kit_root() / name).resolve()


# The folder of released weights a run looks in first (models/checkpoint.py); job rendering mounts it.
PRETRAINED_DIR_ENV = "WAVEMLP_PRETRAINED_DIR"


def cache_dir() -> Path:
    """The kit's per-user cache: released weights are looked for there, and an installed kit stages its
    image build context there (``$XDG_CACHE_HOME/wavemlp``, else ``~/.cache/wavemlp``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "wavemlp"
