"""timm's train/eval transforms from the recipe's typed sections, and the DataLoader the engine iterates.

The settings arrive as :mod:`wavemlp.recipe.schema` sections (``DataCfg``, ``AugmentCfg``) that the recipe
loader has already validated, plus the model's input size: nothing here checks them a second time.
Batches are ``(images, targets, n_skipped)`` (see :func:`~wavemlp.data.dataset.collate_skip_bad`).
"""

import contextlib
import random
import signal
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..recipe.schema import AugmentCfg, DataCfg
from .dataset import ImageDataset, collate_skip_bad

PIPELINES = ("timm", "fast")


def _is_fast(data: DataCfg) -> bool:
    # A section built in code (dataclasses.replace) skips the loader's choices check: an unknown
    # pipeline must not quietly train with timm's.
    if data.pipeline not in PIPELINES:
        raise ValueError("pipeline must be one of {}, got {!r}".format(", ".join(PIPELINES), data.pipeline))
    return data.pipeline == "fast"


def train_transform(data: DataCfg, augment: AugmentCfg, img_size: int):
    """timm's ``create_transform`` for training: random-resized crop, flips, RandAugment, jitter, erasing.

    ``train_interpolation: random`` picks bilinear or bicubic per image; with an ``auto_augment``
    policy set, timm ignores ``color_jitter`` (as in the authors' runs). ``data.pipeline: fast`` gives
    the same augmentation with uint8 tensors out, for lazily opened images (:func:`build_dataset`) and
    :class:`~wavemlp.data.fast.DeviceNormalize`.
    """
    from timm.data import create_transform

    auto_augment = augment.auto_augment or None
    if auto_augment is not None and auto_augment.lower() == "none":
        auto_augment = None
    kwargs = dict(
        input_size=img_size,
        scale=tuple(augment.scale),
        ratio=tuple(augment.ratio),
        hflip=augment.hflip,
        vflip=augment.vflip,
        color_jitter=augment.color_jitter,
        auto_augment=auto_augment,
        interpolation=augment.train_interpolation,
        mean=tuple(data.mean),
        std=tuple(data.std),
        re_prob=augment.reprob,
        re_mode=augment.remode,
        re_count=augment.recount,
    )
    if _is_fast(data):
        from .fast import fast_train_transform

        return _with_safe_posterize(fast_train_transform(kwargs))
    return _with_safe_posterize(create_transform(is_training=True, **kwargs))


def eval_transform(data: DataCfg, img_size: int):
    """timm's evaluation transform: resize the short side to ``int(img_size / crop_pct)``, centre crop."""
    from timm.data import create_transform

    if data.interpolation == "random":  # timm would pick per image: evaluation numbers must not vary
        raise ValueError("interpolation 'random' is for training only; evaluation needs a fixed one (bicubic)")
    return create_transform(
        input_size=img_size,
        is_training=False,
        interpolation=data.interpolation,
        mean=tuple(data.mean),
        std=tuple(data.std),
        crop_pct=data.crop_pct,
    )


def build_transforms(data: DataCfg, augment: AugmentCfg, img_size: int, is_training: bool):
    """:func:`train_transform` or :func:`eval_transform` (which reads no augmentation setting)."""
    return train_transform(data, augment, img_size) if is_training else eval_transform(data, img_size)


def build_dataset(
    root,
    split: str,
    data: DataCfg,
    augment: AugmentCfg,
    img_size: int,
    is_training: bool,
    class_to_idx: Optional[Dict[str, int]] = None,
) -> ImageDataset:
    """The split with its transform; the fast training pipeline gets lazily opened images to decode itself.

    Unreadable images are skipped or stop the run as ``data.on_bad_image`` says.
    """
    return ImageDataset(
        root,
        split,
        transform=build_transforms(data, augment, img_size, is_training),
        on_bad_image=data.on_bad_image,
        class_to_idx=class_to_idx,
        lazy_decode=is_training and _is_fast(data),
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


# Signals that ask the trainer to stop (Ctrl-C, scancel, torchrun, Slurm's --signal). Slurm and a terminal
# send them to every process of the job or foreground group, data-loader workers included; torch's worker
# dies of TERM unless its parent sent it. A dead worker kills the trainer mid-step (``DataLoader worker
# (pid N) is killed by signal``) before it can checkpoint, so workers ignore these signals and leave the
# stop to the trainer, which then shuts them down itself (see :func:`close_loader`).
WORKER_IGNORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)
_CAN_MASK = hasattr(signal, "pthread_sigmask")


def init_worker(worker_id: int) -> None:
    """Every worker's ``worker_init_fn``: ignore the stop signals, then seed (:func:`seed_worker`).

    The worker was forked with those signals blocked (:func:`_stop_signals_blocked`): one sent while it
    started is pending, and ignoring it before unblocking discards it instead of killing the worker.
    """
    for sig in WORKER_IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if _CAN_MASK:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, WORKER_IGNORED_SIGNALS)
    seed_worker(worker_id)


@contextlib.contextmanager
def _stop_signals_blocked(active: bool) -> Iterator[None]:
    """Hold the stop signals back from this thread while it starts workers (they inherit the mask);
    the parent handles any that arrived when they are unblocked on the way out."""
    if not (active and _CAN_MASK):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_IGNORED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class KitDataLoader(DataLoader):
    """A DataLoader whose workers start with the stop signals blocked (see :func:`init_worker`)."""

    def __iter__(self):
        with _stop_signals_blocked(self.num_workers > 0):
            return super().__iter__()


def close_loader(loader, timeout_s: float = 10.0) -> None:
    """Stop a loader's worker processes now, persistent ones included, instead of at garbage collection.

    torch asks each worker to finish and then terminates laggards with SIGTERM, which our workers
    ignore: any still alive after ``timeout_s`` is killed, so that exiting never waits on a stuck one.
    Uses torch's iterator internals where they exist (torch 1.13..2.x); otherwise does nothing.
    """
    iterator = getattr(loader, "_iterator", None)
    if iterator is None:
        return
    loader._iterator = None
    workers = list(getattr(iterator, "_workers", []))
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
    for w in workers:
        w.join(timeout_s)
        if w.is_alive():
            w.kill()
            w.join(timeout_s)


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
    Workers ignore the stop signals (:func:`init_worker`); :func:`close_loader` ends them.
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
        worker_init_fn=init_worker,
        generator=generator,
    )
    if workers > 0:
        kwargs["persistent_workers"] = bool(persistent_workers)
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = int(prefetch_factor)
    return KitDataLoader(dataset, **kwargs)
