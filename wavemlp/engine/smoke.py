"""``wmlp smoke``: prove an environment trains. One real step, a checkpoint round trip, one eval step.

The step is the trainer's own (:class:`~wavemlp.engine.components.TrainStep`: the recipe's model,
optimizer, mixup, loss, precision, clipping and EMA) on a synthetic batch shaped and typed as the
recipe's loader delivers it, on the device present (the CPU when there is none). Returns a verdict
dict; ``ok`` is False (and ``error`` says why) on any failure.

Runs inside images: Python 3.8 syntax, torch >= 1.13.
"""

import math
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import torch

from .. import __version__
from ..recipe import Recipe
from . import components, devices
from .checkpoint import atomic_save, load_state


def run_smoke(recipe: Recipe, device: str = "auto", batch_size: int = 2, img_size: Optional[int] = None) -> Dict:
    import timm

    verdict: Dict[str, object] = {
        "ok": False,
        "kit": __version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "model": recipe.model.name,
    }
    try:
        info = devices.detect()
        # The device present, whatever the recipe targets: a smoke test proves the image, not the node.
        dev = devices.resolve_device(device)
        precision = devices.resolve_precision(recipe.train.precision, dev)
        verdict.update(device=dev.type, vendor=info.vendor, device_names=info.names, sdk=info.sdk, precision=precision)
        # Fresh weights: starting weights are site files that an image does not carry.
        recipe = replace(
            recipe,
            model=replace(
                recipe.model, img_size=img_size or recipe.model.img_size, pretrained=False, initial_checkpoint=""
            ),
            train=replace(recipe.train, batch_size=batch_size),
        )
        torch.manual_seed(0)
        model = components.build_model(recipe, dev)
        step = components.build_train_step(recipe, model, dev, precision)
        images, labels = components.synthetic_batch(recipe, dev)
        before = [p.detach().clone() for p in model.parameters()]

        devices.synchronize(dev)
        t0 = time.perf_counter()
        loss = step(images, labels, global_step=0)
        devices.synchronize(dev)
        verdict["step_time_s"] = time.perf_counter() - t0
        if loss is None:
            raise RuntimeError(f"batch size {batch_size} leaves no pair of images for mixup/cutmix: use 2 or more")
        verdict["loss"] = loss
        if not math.isfinite(loss):
            raise RuntimeError("the training step gave a non-finite loss ({})".format(loss))
        if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
            raise RuntimeError("the optimizer step changed no weight")

        with tempfile.TemporaryDirectory(prefix="wmlp-smoke-") as tmp:
            path = Path(tmp) / "last-e0000-s0000001.pth"
            from .checkpoint import FORMAT

            atomic_save(
                {
                    "format": FORMAT,
                    "state_dict": model.state_dict(),
                    "optimizer": step.optimizer.state_dict(),
                    "epoch": 0,
                    "step": 1,
                },
                path,
            )
            state = load_state(path)
            reloaded = components.build_model(recipe, dev)
            reloaded.load_state_dict(state["state_dict"])
            verdict["checkpoint_bytes"] = path.stat().st_size

        model.eval()
        reloaded.eval()
        x = components.build_normalize(recipe, dev, is_training=False)(images.to(dev))
        if recipe.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), devices.autocast(dev, precision):
            a, b = model(x).float(), reloaded(x).float()
        if not torch.isfinite(a).all():
            raise RuntimeError("the eval step gave non-finite logits")
        if not torch.equal(a, b):
            raise RuntimeError(
                "the reloaded checkpoint gives other logits (max diff {})".format(float((a - b).abs().max()))
            )
        verdict["eval_logits_shape"] = list(a.shape)
        verdict["ok"] = True
    except Exception as exc:  # the verdict must always come out, whatever broke
        verdict["error"] = "{}: {}".format(type(exc).__name__, exc)
        verdict["traceback"] = traceback.format_exc(limit=5)
    return verdict
