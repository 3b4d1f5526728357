"""Training and inference throughput of a recipe's model, measured the way the seed's table reports it.

Clocks are read only after the device is synchronised; warm-up steps (and with them compilation)
are excluded from the statistics, and the extra time of the first step is reported as compile time.
Each step's time is split into waiting for data and computing. Under torchrun every rank measures
its own device and rank 0 reports the sum.

Runs inside images: Python 3.8 syntax, torch >= 1.13.
"""

import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from .. import __version__
from ..engine import devices, distributed
from ..recipe import Recipe
from .power import PowerSampler

SCHEMA = "wavemlp-kit/bench/1"


@dataclass
class BenchConfig:
    mode: str = "train"  # train | infer
    model: str = ""
    batch_size: int = 0
    steps: int = 20
    warmup: int = 5
    precision: str = ""
    channels_last: bool = False
    compile: bool = False
    fast_path: bool = False
    data: str = "synthetic"
    img_size: int = 0
    device: str = "auto"


def spread(values: List[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _synthetic(batch: int, size: int, num_classes: int, device: torch.device, channels_last: bool):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
    while True:
        yield x, y


def _real(recipe: Recipe, cfg: BenchConfig, dist_info, device: torch.device):
    from ..data import EpochSampler, build_dataset, build_loader, device_normalize
    from ..engine.trainer import data_cfg

    is_train = cfg.mode == "train"
    split = recipe.data.train_split if is_train else recipe.data.val_split
    ds = build_dataset(cfg.data, split, data_cfg(recipe), is_train)
    normalize = device_normalize(data_cfg(recipe), device, is_train)
    sampler = EpochSampler(
        len(ds),
        dist_info.world_size,
        dist_info.rank,
        shuffle=is_train,
        seed=recipe.train.seed + dist_info.rank,
        drop_last=True,
    )
    loader = build_loader(
        ds,
        sampler,
        cfg.batch_size,
        recipe.data.workers,
        device.type == "cuda",
        True,
        prefetch_factor=recipe.data.prefetch_factor,
        seed=recipe.train.seed,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for images, targets, _ in loader:
            if targets.numel() == cfg.batch_size:  # a short batch (bad image) would skew the per-step rate
                images = normalize(images.to(device, non_blocking=True))
                if cfg.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                yield images, targets.to(device, non_blocking=True)
        epoch += 1


def resolve(recipe: Recipe, cfg: BenchConfig) -> BenchConfig:
    """Fill what the flags left open from the recipe."""
    return BenchConfig(
        **dict(
            asdict(cfg),
            model=cfg.model or recipe.model.name,
            batch_size=cfg.batch_size or recipe.train.batch_size,
            precision=cfg.precision or recipe.train.precision,
            img_size=cfg.img_size or recipe.model.img_size,
            channels_last=cfg.channels_last or recipe.model.channels_last,
            compile=cfg.compile or recipe.model.compile,
            fast_path=cfg.fast_path or recipe.model.fast_path,
        )
    )


def build_step(model: nn.Module, recipe: Recipe, cfg: BenchConfig, device: torch.device, precision: str):
    """One training (or inference) step as a closure over model, optimizer and scaler."""
    from ..engine.trainer import _make_optimizer

    if cfg.mode == "infer":
        model.eval()

        @torch.no_grad()
        def infer(x, y):
            with devices.autocast(device, precision):
                return model(x)

        return infer
    model.train()
    optimizer = _make_optimizer(model, recipe)
    scaler = devices.grad_scaler(device, precision)
    loss_fn = nn.CrossEntropyLoss()

    def train(x, y):
        with devices.autocast(device, precision):
            loss = loss_fn(model(x), y)
        devices.backward_and_step(loss, optimizer, scaler)
        return loss

    return train


def make_model(recipe: Recipe, cfg: BenchConfig, device: torch.device) -> nn.Module:
    from ..models import create_model

    model = create_model(cfg.model, num_classes=recipe.model.num_classes, fast_path=cfg.fast_path)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def measure(step, batches, cfg: BenchConfig, device: torch.device) -> Dict[str, object]:
    step_times, data_times, first = [], [], None
    for i in range(cfg.warmup + cfg.steps):
        devices.synchronize(device)
        t0 = time.perf_counter()
        x, y = next(batches)
        devices.synchronize(device)
        t1 = time.perf_counter()
        step(x, y)
        devices.synchronize(device)
        t2 = time.perf_counter()
        if i == 0:
            first = t2 - t1
        if i >= cfg.warmup:
            step_times.append(t2 - t0)
            data_times.append(t1 - t0)
    compute = [s - d for s, d in zip(step_times, data_times)]
    return {"step_times": step_times, "data_times": data_times, "compute_times": compute, "first_step_s": first}


def run_bench(recipe: Recipe, cfg: BenchConfig) -> Dict[str, object]:
    import timm

    dist_info = distributed.from_environment()
    cfg = resolve(recipe, cfg)
    device = devices.resolve_device(
        cfg.device if cfg.device != "auto" else recipe.hardware.device, dist_info.local_rank
    )
    distributed.init(dist_info, recipe.hardware.dist_backend, device)
    try:
        precision = devices.resolve_precision(cfg.precision, device)
        torch.manual_seed(recipe.train.seed + dist_info.rank)
        model = make_model(recipe, cfg, device)
        net = model
        if dist_info.enabled and cfg.mode == "train":
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile and hasattr(torch, "compile"):
            net = torch.compile(net)
        step = build_step(net, recipe, cfg, device, precision)
        if cfg.data == "synthetic":
            batches = _synthetic(cfg.batch_size, cfg.img_size, recipe.model.num_classes, device, cfg.channels_last)
        else:
            batches = _real(recipe, cfg, dist_info, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        power = PowerSampler().start() if dist_info.is_main else None
        raw = measure(step, batches, cfg, device)
        if power is not None:
            power.stop()
        med_step = statistics.median(raw["step_times"])
        per_device = [cfg.batch_size / t for t in raw["step_times"]]
        total = distributed.all_reduce_sum(
            [statistics.median(per_device)], device if (dist_info.enabled and device.type == "cuda") else None
        )[0]
        info = devices.detect()
        return {
            "schema": SCHEMA,
            "mode": cfg.mode,
            "model": cfg.model,
            "precision": precision,
            "batch_size": cfg.batch_size,
            "img_size": cfg.img_size,
            "channels_last": cfg.channels_last,
            "compile": bool(cfg.compile and hasattr(torch, "compile")),
            "fast_path": cfg.fast_path,
            "data": cfg.data,
            "device": {
                "type": device.type,
                "vendor": info.vendor,
                "name": info.names[0] if info.names else "",
                "count": info.count,
                "sdk": info.sdk,
            },
            "world_size": dist_info.world_size,
            "steps": cfg.steps,
            "warmup": cfg.warmup,
            "img_s_per_device": spread(per_device),
            "img_s_total": total,
            "step_time_s": spread(raw["step_times"]),
            "data_time_s": spread(raw["data_times"]),
            "compute_time_s": spread(raw["compute_times"]),
            "data_wait_share": sum(raw["data_times"]) / sum(raw["step_times"]),
            "compile_time_s": max(0.0, raw["first_step_s"] - med_step) if cfg.compile else None,
            "peak_mem_mb": devices.peak_memory_mb(device),
            "peak_mem_kind": "device" if device.type == "cuda" else "host_rss",
            "power": power.summary() if power is not None else "n/a",
            "versions": {
                "kit": __version__,
                "torch": torch.__version__,
                "timm": timm.__version__,
                "python": sys.version.split()[0],
            },
        }
    finally:
        distributed.shutdown()


def write_json(result: Dict[str, object], path: Optional[str]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2))
