"""``wmlp bench --mode data``: decoded and augmented images/s of the recipe's training transform.

Per worker (one process reading, decoding, augmenting and collating batches, as a DataLoader worker
does) for both pipelines, timm's and the fast one, on the same samples with the same seeds; then
through a real DataLoader with ``workers`` processes for the recipe's pipeline, so users see whether
the loader can feed their devices. The fast pipeline leaves normalisation and random erasing to the
device: their cost there is reported too (``device_normalize_ms_per_img``).

Runs inside images: Python 3.8 syntax.
"""

import time
from dataclasses import replace
from typing import Dict, List, Optional

import torch

from ..recipe import Recipe

HAND_OVER_BATCH = 32


def _per_worker(ds, order: List[object], warm: int = 5) -> float:
    """Images/s of one process: read, decode, augment, collate in batches (what a loader worker does)."""
    from ..data import collate_skip_bad

    for item in order[:warm]:  # caches and lazy imports
        ds[item]
    timed = order[warm:]
    t0 = time.perf_counter()
    for start in range(0, len(timed), HAND_OVER_BATCH):
        collate_skip_bad([ds[item] for item in timed[start : start + HAND_OVER_BATCH]])
    return len(timed) / (time.perf_counter() - t0)


def _normalize_cost_ms(recipe: Recipe, ds, order: List[object], device: torch.device) -> float:
    """Milliseconds per image that the fast pipeline's device step (normalise, erase) takes on ``device``."""
    from ..data import collate_skip_bad
    from ..engine.components import build_normalize

    images = collate_skip_bad([ds[item] for item in order[:HAND_OVER_BATCH]])[0].to(device)
    step = build_normalize(recipe, device, is_training=True)
    step(images)
    reps = 5
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        step(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / (reps * images.shape[0]) * 1e3


def run_data_bench(
    recipe: Recipe, root: str, steps: int = 200, workers: Optional[int] = None, device: str = "cpu"
) -> Dict[str, object]:
    from ..data import EpochSampler, build_loader, decoder_name
    from ..engine.components import build_train_set

    per_worker = {}
    sets = {}
    for pipeline in ("timm", "fast"):
        sets[pipeline] = build_train_set(replace(recipe, data=replace(recipe.data, path=str(root), pipeline=pipeline)))
    n = min(steps, len(sets["timm"]))
    sampler = EpochSampler(len(sets["timm"]), shuffle=True, seed=recipe.train.seed)
    order = [item for _, item in zip(range(n + 5), iter(sampler))]
    for pipeline in ("timm", "fast", "timm", "fast"):  # interleaved, best of two: less drift from a busy host
        per_worker[pipeline] = max(per_worker.get(pipeline, 0.0), _per_worker(sets[pipeline], order))
    normalize_ms = _normalize_cost_ms(recipe, sets["fast"], order, torch.device(device))

    ds = sets[recipe.data.pipeline]
    workers = workers or max(1, recipe.data.workers)
    batch = max(1, min(recipe.train.batch_size, 16, len(ds) // 2))
    loader = build_loader(
        ds,
        sampler,
        batch,
        workers,
        False,
        True,
        persistent_workers=True,
        prefetch_factor=recipe.data.prefetch_factor,
        seed=recipe.train.seed,
    )
    images, t_first, epoch = 0, None, 0
    while images < n:  # as many epochs as it takes on a small data set
        sampler.set_epoch(epoch)
        for images_batch, _, _ in loader:
            if t_first is None:
                t_first = time.perf_counter()  # from the first batch on: worker start-up excluded
            else:
                images += images_batch.shape[0]
            if images >= n:
                break
        epoch += 1
    t_end = time.perf_counter()
    loader_rate = images / (t_end - t_first) if t_first and t_end > t_first else float("nan")
    return {
        "mode": "data",
        "pipeline": recipe.data.pipeline,
        "decoder": decoder_name(),
        "images_timed": len(order) - 5,
        "img_s_per_worker": per_worker[recipe.data.pipeline],
        "timm_img_s_per_worker": per_worker["timm"],
        "fast_img_s_per_worker": per_worker["fast"],
        "fast_vs_timm": per_worker["fast"] / per_worker["timm"],
        "device_normalize_ms_per_img": normalize_ms,
        "loader_workers": workers,
        "loader_img_s": loader_rate,
        "img_size": recipe.model.img_size,
        "auto_augment": recipe.augment.auto_augment,
    }
