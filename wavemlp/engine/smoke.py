"""``wmlp smoke``: prove an environment trains. One real step, a checkpoint round trip, one eval step.

Synthetic data, the recipe's model, optimizer and precision, on the device present (the CPU when there
is none). Returns a verdict dict; ``ok`` is False (and ``error`` says why) on any failure.

Runs inside images: Python 3.8 syntax, torch >= 1.13.
"""

import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, Optional

import torch

from .. import __version__
from ..recipe import Recipe
from . import devices
from .checkpoint import atomic_save, load_state


def run_smoke(recipe: Recipe, device: str = "auto", batch_size: int = 2, img_size: Optional[int] = None) -> Dict:
    import timm

    from ..models import create_model
    from .trainer import _make_optimizer

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
        size = img_size or recipe.model.img_size
        torch.manual_seed(0)
        model = create_model(
            recipe.model.name, num_classes=recipe.model.num_classes, drop_path_rate=recipe.model.drop_path_rate
        ).to(dev)
        optimizer = _make_optimizer(model, recipe)
        scaler = devices.grad_scaler(dev, precision)
        x = torch.randn(batch_size, 3, size, size, device=dev)
        y = torch.randint(0, recipe.model.num_classes, (batch_size,), device=dev)
        before = [p.detach().clone() for p in model.parameters()]

        devices.synchronize(dev)
        t0 = time.perf_counter()
        with devices.autocast(dev, precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        devices.backward_and_step(loss, optimizer, scaler)
        devices.synchronize(dev)
        verdict["step_time_s"] = time.perf_counter() - t0
        verdict["loss"] = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise RuntimeError("the training step gave a non-finite loss ({})".format(float(loss)))
        if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
            raise RuntimeError("the optimizer step changed no weight")

        with tempfile.TemporaryDirectory(prefix="wmlp-smoke-") as tmp:
            path = Path(tmp) / "last-e0000-s0000001.pth"
            from .checkpoint import FORMAT

            atomic_save(
                {
                    "format": FORMAT,
                    "state_dict": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": 0,
                    "step": 1,
                },
                path,
            )
            state = load_state(path)
            reloaded = create_model(recipe.model.name, num_classes=recipe.model.num_classes).to(dev)
            reloaded.load_state_dict(state["state_dict"])
            verdict["checkpoint_bytes"] = path.stat().st_size

        model.eval()
        reloaded.eval()
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
