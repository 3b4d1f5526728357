"""Reading Wave-MLP weights from the files people actually have.

The authors' release and timm's trainer save a dict with ``state_dict`` (and ``state_dict_ema``);
other tools save ``model`` or a bare state_dict, often with DDP's ``module.`` prefix. All load here.
Weights are never downloaded at run time: they come from a local file or a clear message says
where to put one.
"""

import os
import pickle
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..errors import KitError
from ..resources import PRETRAINED_DIR_ENV, cache_dir

RELEASE_HINT = "the authors' release of Wave-MLP (github.com/huawei-noah/Efficient-AI-Backbones, wavemlp_pytorch)"
_SHOW = 5  # keys shown per category in a mismatch message


class CheckpointError(KitError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message is one line."""


def read_checkpoint(path) -> object:
    """``torch.load`` on CPU, tensor-only unpickling first.

    Files from the authors' trainer carry an ``argparse.Namespace``; those are unpickled in full,
    with a warning, because the user pointed at the file explicitly.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        warnings.warn(
            f"{path} holds Python objects beyond tensors; loading it with full unpickling (only load files you trust)",
            stacklevel=2,
        )
    except TypeError:  # torch < 1.13 has no weights_only
        pass
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except TypeError:
        return torch.load(str(path), map_location="cpu")
    except Exception as exc:  # a truncated or foreign file: say which and why, in one line
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def extract_state_dict(obj: object, use_ema: bool = False, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model's weights out of any of the saved forms, without DDP's ``module.`` prefix."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source} is not a state_dict or a dict holding one")
    if use_ema:
        for key in ("state_dict_ema", "model_ema", "ema"):
            if isinstance(obj.get(key), Mapping):
                return strip_prefix(obj[key])
        raise CheckpointError(f"{source} holds no EMA weights (looked for state_dict_ema, model_ema, ema)")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), Mapping):
            return strip_prefix(obj[key])
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return strip_prefix(obj)
    raise CheckpointError(
        "{} has no weights: expected a state_dict, or a dict with state_dict, state_dict_ema or model "
        "(found keys: {})".format(source, ", ".join(sorted(map(str, obj.keys()))[:_SHOW]))
    )


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> Dict[str, torch.Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_fit(model: nn.Module, state_dict: Mapping[str, torch.Tensor], ignore: Tuple[str, ...] = ()) -> Optional[str]:
    """None when the weights fit the model exactly, else a one-line account of what does not."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith(ignore)]
    unexpected = [k for k in state_dict if k not in own and not k.startswith(ignore)]
    shapes = [
        f"{k} checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape conflicts", shapes)):
        if items:
            parts.append(
                "{} {} ({}{})".format(
                    len(items), label, "; ".join(items[:_SHOW]), "; ..." if len(items) > _SHOW else ""
                )
            )
    return ", ".join(parts) or None


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    skip_head: bool = False,
    source: str = "checkpoint",
) -> None:
    """Strict load; with ``skip_head`` the classifier is left as initialised (fine-tuning)."""
    state_dict = dict(state_dict)
    ignore: Tuple[str, ...] = ()
    if skip_head:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
        ignore = ("head.",)
    problem = check_fit(model, state_dict, ignore)
    if problem:
        hint = ""
        if not skip_head and "head." in problem:
            hint = " (another num_classes? load with skip_head=True to keep a fresh head)"
        raise CheckpointError(f"{source} does not fit the model: {problem}{hint}")
    model.load_state_dict(state_dict, strict=not skip_head)


def load_checkpoint(model: nn.Module, path, use_ema: bool = False, skip_head: bool = False) -> None:
    sd = extract_state_dict(read_checkpoint(path), use_ema=use_ema, source=str(path))
    load_weights(model, sd, skip_head=skip_head, source=str(path))


def pretrained_search_path(filename: Optional[str]) -> List[Path]:
    """Where a released file is looked for, in order; empty where no file was released."""
    if not filename:
        return []
    dirs = []
    if os.environ.get(PRETRAINED_DIR_ENV):
        dirs.append(Path(os.environ[PRETRAINED_DIR_ENV]))
    dirs.append(cache_dir())
    return [d / filename for d in dirs]


def resolve_pretrained(variant: str, filename: Optional[str], checkpoint_path=None) -> Path:
    """``checkpoint_path`` when given, else the released ``filename`` of ``variant`` found locally."""
    if checkpoint_path:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint_path {path} does not exist")
        return path
    candidates = pretrained_search_path(filename)
    if not candidates:
        raise CheckpointError(f"no released weights exist for {variant}; train it or pass checkpoint_path=FILE")
    for path in candidates:
        if path.is_file():
            return path
    raise CheckpointError(
        "pretrained weights for {} not found; put {} from {} in ${} or {} (looked at: {}), "
        "or pass checkpoint_path=FILE".format(
            variant,
            candidates[0].name,
            RELEASE_HINT,
            PRETRAINED_DIR_ENV,
            cache_dir(),
            ", ".join(str(p) for p in candidates),
        )
    )


def load_pretrained(
    model: nn.Module,
    variant: str,
    filename: Optional[str],
    checkpoint_path=None,
    use_ema: bool = False,
    skip_head: bool = False,
) -> Path:
    path = resolve_pretrained(variant, filename, checkpoint_path)
    load_checkpoint(model, path, use_ema=use_ema, skip_head=skip_head)
    return path
