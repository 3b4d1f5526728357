"""``create_model``: one entry point taking the authors' names and timm-style names alike."""

import difflib
from typing import List

import torch.nn as nn
from timm.models import model_entrypoint

from ..errors import KitError
from .wavemlp import AUTHOR_NAMES


class UnknownModelError(KitError, ValueError):
    pass


def list_models() -> List[str]:
    return list(AUTHOR_NAMES)


def resolve_name(name: str) -> str:
    """'WaveMLP_T_dw', 'wavemlp_t_dw' or 'wavemlp-t-dw' -> 'wavemlp_t_dw'."""
    key = name.strip().lower().replace("-", "_")
    if key.endswith(".in1k"):
        key = key[: -len(".in1k")]
    if key in AUTHOR_NAMES:
        return key
    known = list(AUTHOR_NAMES) + list(AUTHOR_NAMES.values())
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = "; did you mean {}?".format(" or ".join(close)) if close else ""
    raise UnknownModelError("unknown model {!r}{} (known: {})".format(name, hint, ", ".join(AUTHOR_NAMES)))


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path=None,
    num_classes: int = 1000,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    **kwargs,
) -> nn.Module:
    """Build a Wave-MLP variant; with ``pretrained`` or ``checkpoint_path``, load local weights.

    Extra keyword arguments: ``use_ema`` (load the EMA weights of a training checkpoint),
    ``skip_head`` (leave the classifier fresh, for another ``num_classes``), ``features_only``,
    ``out_indices``, ``in_chans``, ``global_pool``.
    """
    variant = resolve_name(name)
    # Called through the registry entry rather than timm.create_model, whose own checkpoint_path
    # handling would bypass this package's loader (EMA choice, prefixes, clear errors).
    return model_entrypoint(variant)(
        pretrained=pretrained,
        checkpoint_path=checkpoint_path,
        num_classes=num_classes,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
