"""Evaluation: top-1/top-5 and loss, summed exactly over ranks (no padded duplicates).

Runs inside images: Python 3.8 syntax.
"""

from typing import Dict, Iterator, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..errors import KitError
from . import devices, distributed


class ShardSampler(Sampler):
    """Indices rank, rank + world, ...: every sample evaluated exactly once across the ranks."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def build_eval_loader(dataset, dist_info, batch_size: int, workers: int, pin_memory: bool):
    from ..data import build_loader

    sampler = ShardSampler(len(dataset), dist_info.rank, dist_info.world_size)
    return build_loader(dataset, sampler, batch_size, workers, pin_memory, False, persistent_workers=workers > 0)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, device: torch.device, precision: str = "fp32", channels_last: bool = False
) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    loss_sum, correct1, correct5, count, skipped = 0.0, 0.0, 0.0, 0.0, 0.0
    for batch in loader:
        images, targets, n_bad = batch[0], batch[1], int(batch[2])
        skipped += n_bad
        if targets.numel() == 0:
            continue
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(targets.view(-1, 1))
        correct1 += float(hit[:, :1].sum())
        correct5 += float(hit[:, :k].sum())
        count += targets.numel()
    loss_sum, correct1, correct5, count, skipped = distributed.all_reduce_sum(
        [loss_sum, correct1, correct5, count, skipped],
        device if (device.type == "cuda" and distributed.dist.is_initialized()) else None,
    )
    model.train(was_training)
    n = max(count, 1.0)
    return dict(
        top1=100.0 * correct1 / n, top5=100.0 * correct5 / n, loss=loss_sum / n, count=int(count), skipped=int(skipped)
    )


def evaluate_checkpoint(
    model_name: Optional[str],
    checkpoint: str,
    data: str,
    split: str = "val",
    batch_size: int = 128,
    use_ema: bool = False,
    workers: int = 4,
    device: str = "auto",
    img_size=None,
    crop_pct=None,
    interpolation=None,
) -> Dict[str, object]:
    """Top-1/top-5 of a checkpoint file (the authors' releases as they are, or this kit's).

    Preprocessing follows, in order: the flags; the recipe saved in one of this kit's checkpoints
    (so a run's own numbers are reproduced); the model's default config (224, its crop_pct, bicubic).
    """
    from dataclasses import replace

    from timm.data import resolve_data_config

    from ..data import ImageDataset, eval_transform
    from ..models import create_model, extract_state_dict, read_checkpoint, resolve_name
    from ..models.checkpoint import load_weights
    from ..recipe import parse_recipe
    from ..recipe.schema import DataCfg

    raw = read_checkpoint(checkpoint)
    if not model_name:
        # This kit's checkpoints name their architecture; the authors' releases do not.
        model_name = raw.get("arch") if isinstance(raw, dict) else None
        if not isinstance(model_name, str) or not model_name:
            raise KitError(
                "--model: {} does not record its architecture (a released file?): name it, e.g. "
                "--model WaveMLP_T_dw".format(checkpoint)
            )
    state = extract_state_dict(raw, use_ema=use_ema, source=str(checkpoint))
    head = state.get("head.weight")
    num_classes = int(head.shape[0]) if head is not None else 1000
    model = create_model(resolve_name(model_name), num_classes=num_classes)
    load_weights(model, state, source=str(checkpoint))
    saved = raw.get("recipe") if isinstance(raw, dict) else None
    if isinstance(saved, str):
        recipe = parse_recipe(saved, f"{checkpoint} (its saved recipe)")
        pre, size = recipe.data, recipe.model.img_size
    else:
        cfg = resolve_data_config({}, model=model)
        pre = DataCfg(
            crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"], mean=list(cfg["mean"]), std=list(cfg["std"])
        )
        size = cfg["input_size"][-1]
    if crop_pct is not None:
        pre = replace(pre, crop_pct=crop_pct)
    if interpolation is not None:
        pre = replace(pre, interpolation=interpolation)
    if img_size is not None:
        size = img_size
    dataset = ImageDataset(data, split, transform=eval_transform(pre, size))
    dev = devices.resolve_device(device)
    model.to(dev)
    loader = build_eval_loader(dataset, distributed.DistInfo(), batch_size, workers, dev.type == "cuda")
    metrics = evaluate(model, loader, dev, "fp32")
    metrics.update(
        model=model_name,
        checkpoint=str(checkpoint),
        split=split,
        weights="ema" if use_ema else "model",
        img_size=size,
        crop_pct=pre.crop_pct,
        interpolation=pre.interpolation,
        mean=list(pre.mean),
        std=list(pre.std),
    )
    return metrics
