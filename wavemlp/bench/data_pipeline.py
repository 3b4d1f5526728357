"""``wmlp bench --mode data``: decoded and augmented images/s of the recipe's training transform.

Per worker (one process decoding and augmenting), and through a real DataLoader with ``workers``
processes, so users see whether the loader can feed their devices.

Runs inside images: Python 3.8 syntax.
"""

import time
from typing import Dict, Optional

from ..recipe import Recipe


def run_data_bench(recipe: Recipe, root: str, steps: int = 200, workers: Optional[int] = None) -> Dict[str, object]:
    from ..data import EpochSampler, ImageDataset, build_loader, build_transforms
    from ..engine.trainer import data_cfg

    ds = ImageDataset(root, recipe.data.train_split, transform=build_transforms(data_cfg(recipe), True))
    n = min(steps, len(ds))
    sampler = EpochSampler(len(ds), shuffle=True, seed=recipe.train.seed)
    order = [item for _, item in zip(range(n + 5), iter(sampler))]
    for item in order[:5]:  # warm caches and lazy imports
        ds[item]
    t0 = time.perf_counter()
    for item in order[5:]:
        ds[item]
    per_worker = (len(order) - 5) / (time.perf_counter() - t0)

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
        "images_timed": len(order) - 5,
        "img_s_per_worker": per_worker,
        "loader_workers": workers,
        "loader_img_s": loader_rate,
        "img_size": recipe.model.img_size,
        "auto_augment": recipe.augment.auto_augment,
    }
