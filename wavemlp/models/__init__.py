"""The Wave-MLP family. Knows nothing of training: architecture, registry and weight loading.

May import torch, timm, ``wavemlp.errors`` and ``wavemlp.resources``; nothing from ``recipe``, ``data``,
``engine`` or the job side.
"""

from .checkpoint import CheckpointError, extract_state_dict, load_checkpoint, load_weights, read_checkpoint
from .factory import UnknownModelError, create_model, list_models, resolve_name
from .wavemlp import AUTHOR_NAMES, PATM, VARIANTS, WaveBlock, WaveMLP, drop_path_rates

__all__ = [
    "AUTHOR_NAMES",
    "VARIANTS",
    "PATM",
    "WaveBlock",
    "WaveMLP",
    "drop_path_rates",
    "CheckpointError",
    "extract_state_dict",
    "load_checkpoint",
    "load_weights",
    "read_checkpoint",
    "UnknownModelError",
    "create_model",
    "list_models",
    "resolve_name",
]
