"""wavemlp-kit: the Wave-MLP family and the kit that trains, evaluates and measures it.

Importing the package registers the lowercase names (``wavemlp_t_dw`` ...) with timm.
"""

from .models import AUTHOR_NAMES, CheckpointError, UnknownModelError, WaveMLP, create_model, list_models

__version__ = "0.1.0"
__all__ = [
    "AUTHOR_NAMES",
    "CheckpointError",
    "UnknownModelError",
    "WaveMLP",
    "create_model",
    "list_models",
    "__version__",
]
