"""timm's train/eval transforms from a plain config dict, and the DataLoader the engine iterates.

Batches are ``(images, targets, n_skipped)`` (see :func:`~wavemlp.data.dataset.collate_skip_bad`).
"""

import random
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .dataset import ImageDataset, collate_skip_bad

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The seed recipe (spec, "Training recipe of the seed"), with timm train.py's defaults where it is silent.
SEED_RECIPE_CFG = {
    "img_size": 224,
    "interpolation": "bicubic",
    "train_interpolation": "random",
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "crop_pct": 0.9,
    "auto_augment": "rand-m9-mstd0.5-inc1",
    "color_jitter": 0.4,
    "reprob": 0.25,
    "remode": "pixel",
    "recount": 1,
    "hflip": 0.5,
    "vflip": 0.0,
    "scale": (0.08, 1.0),
    "ratio": (3.0 / 4.0, 4.0 / 3.0),
    "pipeline": "timm",
}
PIPELINES = ("timm", "fast")
_EVAL_KEYS = ("img_size", "interpolation", "mean", "std", "crop_pct")
_TRAIN_KEYS = (
    "img_size",
    "train_interpolation",
    "mean",
    "std",
    "auto_augment",
    "color_jitter",
    "reprob",
    "remode",
    "recount",
    "hflip",
    "vflip",
    "scale",
    "ratio",
)


def default_data_cfg(**overrides) -> Dict[str, object]:
    """A copy of the seed recipe's transform config, with ``overrides`` applied."""
    unknown = sorted(set(overrides) - set(SEED_RECIPE_CFG))
    if unknown:
        raise KeyError("unknown transform config keys: {}".format(", ".join(unknown)))
    cfg = dict(SEED_RECIPE_CFG)
    cfg.update(overrides)
    return cfg


def _img_size(value):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"img_size must be an int or (height, width), got {value!r}")
        return tuple(int(v) for v in value)
    return int(value)


def _pair(name: str, value: Sequence[float]):
    if value is None:
        return None
    value = tuple(float(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be two numbers, got {value!r}")
    return value


def build_transforms(cfg: Dict[str, object], is_training: bool):
    """timm's ``create_transform`` for training (random-resized crop, flips, RandAugment, jitter, erasing)
    or evaluation (resize the short side to ``int(img_size / crop_pct)``, centre crop ``img_size``).

    Keys read: see ``SEED_RECIPE_CFG``; training reads ``train_interpolation`` (``"random"`` picks
    bilinear or bicubic per image) and evaluation ``interpolation``. Extra keys are ignored. With an
    ``auto_augment`` policy set, timm ignores ``color_jitter`` (as in the authors' runs).

    ``pipeline: "fast"`` (training only) gives the same augmentation with uint8 tensors out, for
    lazily opened images (:func:`build_dataset`) and :class:`~wavemlp.data.fast.DeviceNormalize`.
    """
    from timm.data import create_transform

    needed = _TRAIN_KEYS if is_training else _EVAL_KEYS
    missing = [k for k in needed if k not in cfg]
    if missing:
        raise KeyError("transform config misses {}".format(", ".join(missing)))
    img_size = _img_size(cfg["img_size"])
    mean = tuple(float(v) for v in cfg["mean"])
    std = tuple(float(v) for v in cfg["std"])
    if is_training:
        auto_augment = cfg["auto_augment"] or None
        if isinstance(auto_augment, str) and auto_augment.lower() == "none":
            auto_augment = None
        kwargs = dict(
            input_size=img_size,
            scale=_pair("scale", cfg["scale"]),
            ratio=_pair("ratio", cfg["ratio"]),
            hflip=float(cfg["hflip"]),
            vflip=float(cfg["vflip"]),
            color_jitter=cfg["color_jitter"],
            auto_augment=auto_augment,
            interpolation=str(cfg["train_interpolation"]),
            mean=mean,
            std=std,
            re_prob=float(cfg["reprob"]),
            re_mode=str(cfg["remode"]),
            re_count=int(cfg["recount"]),
        )
        if _pipeline(cfg) == "fast":
            from .fast import fast_train_transform

            return _with_safe_posterize(fast_train_transform(kwargs))
        return _with_safe_posterize(create_transform(is_training=True, **kwargs))
    interpolation = str(cfg["interpolation"])
    if interpolation == "random":
        raise ValueError("interpolation 'random' is for training only; evaluation needs a fixed one (bicubic)")
    crop_pct = float(cfg["crop_pct"])
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return create_transform(
        input_size=img_size, is_training=False, interpolation=interpolation, mean=mean, std=std, crop_pct=crop_pct
    )


def _pipeline(cfg: Dict[str, object]) -> str:
    pipeline = str(cfg.get("pipeline", "timm"))
    if pipeline not in PIPELINES:
        raise ValueError("pipeline must be one of {}, got {!r}".format(", ".join(PIPELINES), pipeline))
    return pipeline


def build_dataset(
    root,
    split: str,
    cfg: Dict[str, object],
    is_training: bool,
    on_bad_image: str = "skip",
    class_to_idx: Optional[Dict[str, int]] = None,
) -> ImageDataset:
    """The split with its transform; the fast training pipeline gets lazily opened images to decode itself."""
    lazy = is_training and _pipeline(cfg) == "fast"
    return ImageDataset(
        root,
        split,
        transform=build_transforms(cfg, is_training),
        on_bad_image=on_bad_image,
        class_to_idx=class_to_idx,
        lazy_decode=lazy,
    )


def _posterize_keeping_zero_bits(img, bits_to_keep, **_):
    """Posterize that keeps the old meaning of 0 bits (a black image).

    timm's increasing-posterize reaches 0 bits at magnitude 10 (which ``mstd0.5`` noise hits); Pillow
    13 rejects 0 where earlier Pillow returned black, which killed runs at random.
    """
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, int(bits_to_keep))


def _with_safe_posterize(transform):
    """Swap the posterize op of the transform's AutoAugment/RandAugment stage (this object only)."""
    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []) + [o for policy in getattr(t, "policy", []) for o in policy]:
            if getattr(op, "name", "").startswith("Posterize"):
                op.aug_fn = _posterize_keeping_zero_bits
    return transform


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a worker from the seed torch gave it (base seed + worker id).

    The per-sample seeds of EpochSampler override these for the transform; this covers anything else
    a worker draws (and samplers that yield bare indices).
    """
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % (2**32)
    random.seed(seed)
    np.random.seed(seed)


def build_loader(
    dataset,
    sampler,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    is_training: bool,
    persistent_workers: bool = True,
    prefetch_factor: Optional[int] = 2,
    seed: int = 42,
    drop_last: bool = True,
) -> DataLoader:
    """The DataLoader over ``dataset`` in ``sampler``'s order, batches collated by ``collate_skip_bad``.

    ``drop_last`` applies to training only: evaluation always keeps the last partial batch. The loader
    draws its workers' base seed from its own generator (seeded with ``seed``; pass 42 + rank), so
    starting an epoch does not consume the global torch RNG. ``persistent_workers`` and
    ``prefetch_factor`` are only passed with ``workers > 0`` (torch 1.13 rejects them otherwise).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    kwargs = dict(
        batch_size=int(batch_size),
        sampler=sampler,
        shuffle=False,
        num_workers=int(workers),
        pin_memory=bool(pin_memory),
        drop_last=bool(drop_last) and bool(is_training),
        collate_fn=collate_skip_bad,
        worker_init_fn=seed_worker,
        generator=generator,
    )
    if workers > 0:
        kwargs["persistent_workers"] = bool(persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = int(prefetch_factor)
    return DataLoader(dataset, **kwargs)
