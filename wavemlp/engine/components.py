"""A typed ``Recipe`` in, the parts of a training run out: the one place where they are built.

The trainer, ``wmlp smoke``, ``wmlp bench`` and the scripts under ``benchmarks/`` all build their
model, optimizer, schedule, EMA, mixup/cutmix, loss, data and, above all, their training step
(:class:`TrainStep`) here. So a benchmark times the step that training runs, and a smoke test proves
that same step, not a look-alike. Every builder reads the recipe sections it needs and hands over to
timm's own factories; nothing here re-implements what timm does. A caller who wants something other
than the recipe (a benchmark's batch size, a smoke test's image size) changes the recipe with
``dataclasses.replace`` and builds from that.

Imports: torch, numpy, timm, and from this package ``wavemlp.recipe``, ``wavemlp.models``,
``wavemlp.data`` and the engine's leaf modules (``devices``, ``distributed``, ``evaluate``). Never the
trainer, smoke, bench or the command line: they sit on top of this layer.

Runs inside images: Python 3.8 syntax, torch >= 1.13, timm >= 0.9.16.
"""

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import KitError
from ..recipe import Recipe
from . import devices
from .distributed import DistInfo

# --- the model ---------------------------------------------------------------------------------------


def check_names(recipe: Recipe) -> None:
    """The recipe's model and optimizer exist in the registries (one line naming the key when not), so
    that ``recipes check`` and the start of a run refuse what timm would reject with a traceback later."""
    from ..models import factory

    try:
        factory.resolve_name(recipe.model.name)
    except KitError as exc:
        raise KitError("model.name: {}".format(exc)) from None
    import timm.optim

    if hasattr(timm.optim, "list_optimizers"):  # timm >= 0.9.x; older ones fail in create_optimizer_v2
        import difflib

        known = timm.optim.list_optimizers()
        # timm reads "lookahead_adamw" as adamw with lookahead: the last part names the optimizer.
        base = recipe.optim.opt.lower().split("_")[-1]
        if base not in known:
            close = difflib.get_close_matches(base, known, n=1)
            hint = " (did you mean {!r}?)".format(close[0]) if close else ""
            raise KitError("optim.opt: {!r} is not an optimizer timm knows{}".format(recipe.optim.opt, hint))


def build_model(recipe: Recipe, device: torch.device, distributed: bool = False) -> nn.Module:
    """The recipe's model on ``device``: channels_last if asked, BatchNorm synchronised across ranks when
    ``distributed`` and ``train.sync_bn``. Starting weights (``pretrained``, ``initial_checkpoint``)
    come from local files; a fresh head is kept when the class count differs from the file's."""
    from ..models import create_model

    check_names(recipe)
    m = recipe.model
    model = create_model(
        m.name,
        pretrained=m.pretrained,
        checkpoint_path=m.initial_checkpoint or None,
        num_classes=m.num_classes,
        drop_rate=m.drop_rate,
        drop_path_rate=m.drop_path_rate,
        fast_path=m.fast_path,
        skip_head=bool(m.pretrained or m.initial_checkpoint) and m.num_classes != 1000,
    )
    model.to(device)
    if m.channels_last:
        model.to(memory_format=torch.channels_last)
    if distributed and recipe.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_model(model: nn.Module, recipe: Recipe, dist: DistInfo, device: torch.device, train: bool = True) -> nn.Module:
    """What runs the forward pass: DDP around ``model`` when training on several ranks (inference has no
    gradients to synchronise), then ``torch.compile`` when ``model.compile`` asks and torch has it."""
    net = model
    if train and dist.enabled:
        # DDP regroups its gradient buckets after the first step of every start, and the grouping decides the
        # order in which each gradient is summed over ranks: a resumed run would then differ from an
        # uninterrupted one in the last bits. With train.deterministic the buckets stay as built (DDP never
        # regroups when it looks for unused parameters), at the cost of a graph walk per step.
        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(recipe.train.deterministic),
        )
    if recipe.model.compile and hasattr(torch, "compile"):
        net = torch.compile(net)
    return net


# --- optimisation ------------------------------------------------------------------------------------


def build_optimizer(model: nn.Module, recipe: Recipe, warn: Optional[Callable[[str], None]] = None):
    """timm's optimizer for the recipe; ``optim.fused`` falls back (with ``warn``) where torch has no kernel."""
    from timm.optim import create_optimizer_v2

    check_names(recipe)
    o = recipe.optim
    kwargs = {"eps": o.opt_eps}
    if o.opt_betas:
        kwargs["betas"] = tuple(o.opt_betas)
    make = functools.partial(
        create_optimizer_v2, model, opt=o.opt, lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum
    )
    if o.fused:
        try:
            return make(fused=True, **kwargs)
        except (TypeError, RuntimeError) as e:  # torch < 2.0, or no fused kernel for this optimizer/device
            if warn is not None:
                warn(f"optim.fused: no fused {o.opt} kernel here ({e}); using the standard one")
    return make(**kwargs)


def build_scheduler(optimizer, recipe: Recipe) -> Tuple[Any, int]:
    """timm's learning-rate schedule and the number of epochs it runs (cool-down included)."""
    from timm.scheduler import create_scheduler_v2

    s = recipe.sched
    scheduler, num_epochs = create_scheduler_v2(
        optimizer,
        sched=s.sched,
        num_epochs=recipe.train.epochs,
        decay_epochs=s.decay_epochs,
        decay_rate=s.decay_rate,
        min_lr=s.min_lr,
        warmup_lr=s.warmup_lr,
        warmup_epochs=s.warmup_epochs,
        cooldown_epochs=s.cooldown_epochs,
    )
    return scheduler, num_epochs


def build_ema(model: nn.Module, recipe: Recipe):
    """timm's EMA of the weights, or None when ``train.model_ema`` is off."""
    if not recipe.train.model_ema:
        return None
    from timm.utils import ModelEmaV2

    device = "cpu" if recipe.train.model_ema_force_cpu else None
    try:
        from timm.utils import ModelEmaV3

        # Buffers too, every step: what the authors' EMA did (BatchNorm statistics included).
        return ModelEmaV3(model, decay=recipe.train.model_ema_decay, device=device, exclude_buffers=False)
    except ImportError:
        return ModelEmaV2(model, decay=recipe.train.model_ema_decay, device=device)


def build_mixup(recipe: Recipe):
    """timm's Mixup (mixup and/or cutmix, label smoothing folded in), or None when both are off."""
    a = recipe.augment
    if not (a.mixup > 0 or a.cutmix > 0 or a.cutmix_minmax):
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=a.mixup,
        cutmix_alpha=a.cutmix,
        cutmix_minmax=a.cutmix_minmax,
        prob=a.mixup_prob,
        switch_prob=a.mixup_switch_prob,
        mode=a.mixup_mode,
        label_smoothing=a.smoothing,
        num_classes=recipe.model.num_classes,
    )


def build_loss(recipe: Recipe, mixup) -> nn.Module:
    """The training loss that matches the targets: soft ones after mixup, else smoothed or plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup is not None:
        return SoftTargetCrossEntropy()  # smoothing is folded into mixup's soft targets
    if recipe.augment.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=recipe.augment.smoothing)
    return nn.CrossEntropyLoss()


# --- data --------------------------------------------------------------------------------------------


def _data_root(recipe: Recipe) -> Path:
    if not recipe.data.path:
        raise KitError("data.path: no dataset given (set it in the recipe or pass --data DIR)")
    return Path(recipe.data.path).expanduser()


def check_classes(dataset, recipe: Recipe) -> None:
    """A one-line error when the data set has more classes than the model's head has outputs."""
    if dataset.num_classes > recipe.model.num_classes:
        raise KitError(
            f"model.num_classes: {recipe.model.num_classes} is fewer than the "
            f"{dataset.num_classes} classes in {_data_root(recipe)}"
        )


def build_train_set(recipe: Recipe):
    """The training split of ``data.path`` with the recipe's augmentation (timm's or the fast pipeline)."""
    from ..data import build_dataset

    r = recipe
    return build_dataset(str(_data_root(r)), r.data.train_split, r.data, r.augment, r.model.img_size, True)


def build_val_set(recipe: Recipe, class_to_idx: Optional[Dict[str, int]] = None):
    """The validation split with the evaluation transform; pass the training set's ``class_to_idx``."""
    from ..data import build_dataset

    r = recipe
    return build_dataset(
        str(_data_root(r)), r.data.val_split, r.data, r.augment, r.model.img_size, False, class_to_idx=class_to_idx
    )


def build_train_loader(recipe: Recipe, dataset, dist: DistInfo, device: torch.device):
    """``(sampler, loader)`` over ``dataset``: one epoch order for all ranks, each taking its share (the
    sampler mixes the rank into every sample's augmentation seed itself); ``train.batch_size`` per rank."""
    from ..data import EpochSampler, build_loader

    r = recipe
    sampler = EpochSampler(
        len(dataset),
        dist.world_size,
        dist.rank,
        shuffle=True,
        seed=r.train.seed,
        repeated_aug=r.augment.repeated_aug,
        drop_last=True,
    )
    loader = build_loader(
        dataset,
        sampler,
        r.train.batch_size,
        r.data.workers,
        r.data.pin_memory and device.type == "cuda",
        True,
        prefetch_factor=r.data.prefetch_factor,
        seed=r.train.seed + dist.rank,
    )
    return sampler, loader


def build_val_loader(recipe: Recipe, dataset, dist: DistInfo, device: torch.device):
    """Every validation sample exactly once across the ranks, the last partial batch kept."""
    from .evaluate import build_eval_loader

    r = recipe
    return build_eval_loader(
        dataset, dist, r.train.batch_size, r.data.workers, r.data.pin_memory and device.type == "cuda"
    )


def build_normalize(recipe: Recipe, device: torch.device, is_training: bool = True):
    """The device-side step of the fast pipeline (normalise uint8 batches, erase when training); float
    batches from timm's pipeline pass through it untouched."""
    from ..data import device_normalize

    return device_normalize(recipe.data, recipe.augment, device, is_training)


def synthetic_batch(recipe: Recipe, device: torch.device, is_training: bool = True, seed: int = 0):
    """``(images, labels)`` shaped and typed as the recipe's loader hands them over, on the host: uint8
    images from the fast training pipeline, normalised floats otherwise, integer labels; pinned where
    the loader pins. For benchmarks and smoke tests that have no data set but must run the real step."""
    r = recipe
    g = torch.Generator().manual_seed(seed)
    shape = (r.train.batch_size, 3, r.model.img_size, r.model.img_size)
    if is_training and r.data.pipeline == "fast":
        images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    else:
        images = torch.randn(shape, generator=g)
    labels = torch.randint(0, r.model.num_classes, (r.train.batch_size,), generator=g)
    if r.data.pin_memory and device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    return images, labels


# --- the training step -------------------------------------------------------------------------------


def mix_seed(*parts: int) -> int:
    """A 32-bit seed from integers (seed, rank, global step): mixup's draws then depend on nothing else."""
    h = hashlib.sha256(",".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


@dataclass
class TrainStep:
    """One optimizer step of training: call it with a batch as the loader hands it over and the global
    step number; it returns the loss (None when nothing of the batch was left to train on).

    ``net`` runs the forward pass (``model`` itself, or its DDP / compiled wrapper); ``model`` is the
    bare module that the EMA follows and whose gradients are clipped.
    """

    net: nn.Module
    model: nn.Module
    optimizer: Any
    loss_fn: nn.Module
    normalize: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    precision: str = "fp32"
    scaler: Any = None
    mixup: Any = None
    ema: Any = None
    channels_last: bool = False
    clip_grad: Optional[float] = None
    clip_mode: str = "norm"
    seed: int = 0
    rank: int = 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, global_step: int) -> Optional[float]:
        if targets.numel() == 0:  # every image of the batch was unreadable
            return None
        images = self.normalize(images.to(self.device, non_blocking=True))
        targets = targets.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup is not None:
            if images.shape[0] % 2:  # timm's mixup pairs images: a batch shortened by a bad image loses one more
                images, targets = images[:-1], targets[:-1]
                if images.shape[0] == 0:
                    return None
            # Reseeded every step, so that a resumed run draws what the uninterrupted one drew.
            np.random.seed(mix_seed(self.seed, self.rank, global_step))
            images, targets = self.mixup(images, targets)
        with devices.autocast(self.device, self.precision):
            output = self.net(images)
            loss = self.loss_fn(output, targets)
        clip = self._clip if self.clip_grad is not None else None
        devices.backward_and_step(loss, self.optimizer, self.scaler, clip)
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    def _clip(self) -> None:
        from timm.utils import dispatch_clip_grad

        dispatch_clip_grad(self.model.parameters(), value=self.clip_grad, mode=self.clip_mode)

    def describe(self) -> Dict[str, object]:
        """What this step does, for records and for checking that two steps are the same step."""
        mix = self.mixup
        return {
            "loss": type(self.loss_fn).__name__,
            "mixup": None
            if mix is None
            else {
                "mixup_alpha": mix.mixup_alpha,
                "cutmix_alpha": mix.cutmix_alpha,
                "cutmix_minmax": mix.cutmix_minmax,
                "prob": mix.mix_prob,
                "switch_prob": mix.switch_prob,
                "mode": mix.mode,
                "label_smoothing": mix.label_smoothing,
            },
            "optimizer": type(self.optimizer).__name__,
            "fused": bool(self.optimizer.defaults.get("fused")),
            "precision": self.precision,
            "grad_scaler": self.scaler is not None,
            "channels_last": self.channels_last,
            "clip_grad": self.clip_grad,
            "clip_mode": self.clip_mode if self.clip_grad is not None else None,
            "ema_decay": getattr(self.ema, "decay", None),
            "ddp": isinstance(getattr(self.net, "_orig_mod", self.net), DistributedDataParallel),
            "compiled": hasattr(self.net, "_orig_mod"),
        }


def build_train_step(
    recipe: Recipe,
    model: nn.Module,
    device: torch.device,
    precision: str,
    dist: Optional[DistInfo] = None,
    normalize: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    warn: Optional[Callable[[str], None]] = None,
) -> TrainStep:
    """The training step of ``recipe`` for ``model`` (from :func:`build_model`) on ``device`` in
    ``precision`` (as :func:`~wavemlp.engine.devices.resolve_precision` gave it): optimizer, grad
    scaler, EMA, mixup, loss, clipping, and the network wrapped for ``dist`` (see :func:`wrap_model`).
    ``normalize`` defaults to :func:`build_normalize`'s training step."""
    dist = dist if dist is not None else DistInfo()
    optimizer = build_optimizer(model, recipe, warn=warn)
    scaler = devices.grad_scaler(device, precision)
    # The order the trainer has always built them in: the EMA copies the bare model, before DDP or
    # torch.compile wrap it.
    ema = build_ema(model, recipe)
    mixup = build_mixup(recipe)
    loss_fn = build_loss(recipe, mixup).to(device)
    return TrainStep(
        net=wrap_model(model, recipe, dist, device),
        model=model,
        optimizer=optimizer,
        loss_fn=loss_fn,
        normalize=normalize if normalize is not None else build_normalize(recipe, device, is_training=True),
        device=device,
        precision=precision,
        scaler=scaler,
        mixup=mixup,
        ema=ema,
        channels_last=recipe.model.channels_last,
        clip_grad=recipe.optim.clip_grad,
        clip_mode=recipe.optim.clip_mode,
        seed=recipe.train.seed,
        rank=dist.rank,
    )
