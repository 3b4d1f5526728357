"""Data for training Wave-MLP: ImageNet-layout datasets, resumable samplers, timm transforms, demo data."""

from .dataset import BadImageWarning, DataError, ImageDataset, collate_skip_bad, seeded_rng
from .demo import write_demo_dataset
from .fast import DeviceNormalize, decoder_name, device_normalize
from .loader import (
    PIPELINES,
    build_dataset,
    build_loader,
    build_transforms,
    close_loader,
    eval_transform,
    init_worker,
    seed_worker,
    train_transform,
)
from .sampler import EpochSampler, ra_samples_per_rank, sample_seed

__all__ = [
    "BadImageWarning",
    "DataError",
    "DeviceNormalize",
    "EpochSampler",
    "ImageDataset",
    "PIPELINES",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "close_loader",
    "collate_skip_bad",
    "decoder_name",
    "device_normalize",
    "eval_transform",
    "init_worker",
    "ra_samples_per_rank",
    "sample_seed",
    "seed_worker",
    "seeded_rng",
    "train_transform",
    "write_demo_dataset",
]
