"""Where the shipped recipes and templates are, in a source checkout and in an installed wheel."""

from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
# In a wheel the top-level folders are installed as wavemlp/_recipes, wavemlp/_launch, wavemlp/_slurm.
_INSTALLED = {"recipes": "_recipes", "launch": "_launch", "slurm": "_slurm"}


def resource_dir(name: str) -> Path:
    """The folder ``recipes``, ``launch`` or ``slurm``: the checkout's own when running from source."""
    if name not in _INSTALLED:
        raise KeyError(name)
    source = _REPO_ROOT / name
    if (_REPO_ROOT / "pyproject.toml").is_file() and source.is_dir():
        return source
    return Path(__file__).resolve().parent / _INSTALLED[name]


def repo_root():
    """The source checkout holding this package, or None for an installed wheel."""
    return _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").is_file() else None
