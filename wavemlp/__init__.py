"""wavemlp-kit: the Wave-MLP family and the kit that trains, evaluates, measures and ships it.

Importing the package is cheap and needs no torch: the login-node side (``recipe``, ``render``,
``image``, ``vendors``, ``cli``) runs where torch is not installed. The model names below load
``wavemlp.models`` (torch, timm) on first use, which also registers ``wavemlp_t_dw`` ... with timm;
``import wavemlp.models`` does that explicitly.

Packages and what each may import (``tests/test_boundaries.py`` enforces it):

- ``models``: the model family (torch, timm). Nothing from ``recipe``, ``data``, ``engine`` or the job side.
- ``recipe``: recipe files -> one typed ``Recipe`` (yaml). Torch-free.
- ``data``: data sets, samplers, transforms; takes typed recipe sections. No ``engine``.
- ``engine``: components, training loop, evaluation, checkpoints, devices. Uses models, data, recipe.
- ``bench``, ``profiling``, ``report``: measuring, on top of ``engine``.
- ``render``, ``image``, ``vendors``, ``resources``, ``errors``: the login-node side. Torch-free.
- ``cli``: the ``wmlp`` command, the only user of click. Torch-free at import.
"""

__version__ = "0.1.0"

# Attribute -> module that defines it: resolved on first access (PEP 562), so `import wavemlp` stays light.
_LAZY = {
    "AUTHOR_NAMES": "wavemlp.models",
    "CheckpointError": "wavemlp.models",
    "UnknownModelError": "wavemlp.models",
    "WaveMLP": "wavemlp.models",
    "create_model": "wavemlp.models",
    "list_models": "wavemlp.models",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError("module 'wavemlp' has no attribute {!r}".format(name))
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
