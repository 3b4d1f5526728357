"""Training and inference throughput of a recipe's model, measured the way the seed's table reports it.

``--mode train`` times the trainer's own step (:class:`~wavemlp.engine.components.TrainStep`): device
copy, normalisation, mixup/cutmix, the recipe's loss in its precision, clipping, the optimizer and
the EMA update, under DDP and torch.compile as training runs them. So its images/s are training
images/s. Synthetic batches are shaped and typed as the recipe's loader delivers them (uint8 from
the fast pipeline, floats from timm's) and go through that same step. ``--mode infer`` times a
no-grad forward pass of batches as the evaluation loader delivers them.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .. import __version__
from ..engine import components, devices, distributed
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


def bench_recipe(recipe: Recipe, cfg: BenchConfig) -> Recipe:
    """The recipe with the bench's flags applied (``cfg`` resolved): what the components are built from.

    Starting weights are left out: they are site files, and the step's time does not depend on them.
    """
    m, t, d = recipe.model, recipe.train, recipe.data
    return replace(
        recipe,
        model=replace(
            m,
            name=cfg.model,
            img_size=cfg.img_size,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            fast_path=cfg.fast_path,
            pretrained=False,
            initial_checkpoint="",
        ),
        train=replace(t, batch_size=cfg.batch_size, precision=cfg.precision),
        data=replace(d, path=cfg.data if cfg.data != "synthetic" else d.path),
    )


def synthetic_batches(
    recipe: Recipe, device: torch.device, is_training: bool
) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    images, labels = components.synthetic_batch(recipe, device, is_training)
    while True:  # the step may mix the batch in place (on the CPU): values stay bounded, times do not change
        yield images, labels


def loader_batches(recipe: Recipe, dist_info, device: torch.device, is_training: bool):
    """The training loader (or the evaluation one) of the recipe, epoch after epoch, full batches only."""
    if is_training:
        dataset = components.build_train_set(recipe)
        components.check_classes(dataset, recipe)  # else the loss fails on labels past the head
        sampler, loader = components.build_train_loader(recipe, dataset, dist_info, device)
    else:
        sampler, loader = None, components.build_val_loader(recipe, components.build_val_set(recipe), dist_info, device)
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for images, targets, _ in loader:
            if targets.numel() == recipe.train.batch_size:  # a short batch (bad image) would skew the per-step rate
                yield images, targets
        epoch += 1


def build_step(recipe: Recipe, device: torch.device, precision: str, dist_info, is_training: bool):
    """The trainer's training step, or a no-grad forward pass; either is called ``step(images, labels, i)``."""
    model = components.build_model(recipe, device, distributed=dist_info.enabled and is_training)
    if is_training:
        return components.build_train_step(recipe, model, device, precision, dist_info)
    model.eval()
    net = components.wrap_model(model, recipe, dist_info, device, train=False)
    normalize = components.build_normalize(recipe, device, is_training=False)

    @torch.no_grad()
    def infer(images, labels, step):
        images = normalize(images.to(device, non_blocking=True))
        if recipe.model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with devices.autocast(device, precision):
            return net(images)

    return infer


def measure(step, batches, cfg: BenchConfig, device: torch.device) -> Dict[str, object]:
    step_times, data_times, first = [], [], None
    for i in range(cfg.warmup + cfg.steps):
        devices.synchronize(device)
        t0 = time.perf_counter()
        x, y = next(batches)
        devices.synchronize(device)
        t1 = time.perf_counter()
        step(x, y, i)
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
        recipe = bench_recipe(recipe, cfg)
        is_training = cfg.mode == "train"
        torch.manual_seed(recipe.train.seed + dist_info.rank)
        step = build_step(recipe, device, precision, dist_info, is_training)
        if cfg.data == "synthetic":
            batches = synthetic_batches(recipe, device, is_training)
        else:
            batches = loader_batches(recipe, dist_info, device, is_training)
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
            "step": "trainer" if is_training else "forward",
            "train_step": step.describe() if is_training else None,
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
