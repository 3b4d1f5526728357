"""wavemlp-kit: the Wave-MLP family and the kit that trains, evaluates and measures it.

Importing the package registers the lowercase names (``wavemlp_t_dw`` ...) with timm. Where torch or
timm is missing (a login node that only renders launch and Slurm scripts) the package still imports,
without the models.
"""
__version__ = "0.1.0"

try:
    from .models import AUTHOR_NAMES, CheckpointError, UnknownModelError, WaveMLP, create_model, list_models
except ModuleNotFoundError as exc:  # only the heavy dependencies may be absent; anything else is a bug
    if exc.name not in ("torch", "timm", "torchvision"):
        raise

__all__ = [
    "AUTHOR_NAMES", "CheckpointError", "UnknownModelError", "WaveMLP", "create_model", "list_models", "__version__",
]
