"""Data for training Wave-MLP: ImageNet-layout datasets, resumable samplers, timm transforms, demo data."""

from .dataset import BadImageWarning, DataError, ImageDataset, collate_skip_bad, seeded_rng
from .demo import write_demo_dataset
from .fast import DeviceNormalize, decoder_name, device_normalize
from .loader import (
    PIPELINES,
    SEED_RECIPE_CFG,
    build_dataset,
    build_loader,
    build_transforms,
    default_data_cfg,
    seed_worker,
)
from .sampler import EpochSampler, ra_samples_per_rank, sample_seed

__all__ = [
    "BadImageWarning",
    "DataError",
    "DeviceNormalize",
    "EpochSampler",
    "ImageDataset",
    "PIPELINES",
    "SEED_RECIPE_CFG",
    "build_dataset",
    "build_loader",
    "build_transforms",
    "collate_skip_bad",
    "decoder_name",
    "default_data_cfg",
    "device_normalize",
    "ra_samples_per_rank",
    "sample_seed",
    "seed_worker",
    "seeded_rng",
    "write_demo_dataset",
]
