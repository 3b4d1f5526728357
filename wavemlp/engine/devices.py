"""Devices and precision: CUDA (NVIDIA and Iluvatar CoreX alike) or CPU, and the autocast to use.

CoreX devices appear through torch's CUDA API; the vendor's own markers tell them apart (a
``torch.corex`` module, a torch version like ``2.4.1+corex.4.2.0``, device names such as "Iluvatar
BI-V150"): they are listed in ``wavemlp.vendors``.

Runs inside images: Python 3.8 syntax, torch >= 1.13.
"""

import contextlib
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch

from ..errors import KitError
from ..vendors import CUDA_DEFAULT, VENDORS, Vendor, identify


@dataclass
class DeviceInfo:
    type: str  # "cuda" or "cpu"
    vendor: str  # a key of wavemlp.vendors.VENDORS
    names: List[str] = field(default_factory=list)
    count: int = 0
    sdk: str = ""  # CUDA runtime version, or the vendor SDK's (IXUCA on CoreX)
    torch: str = torch.__version__

    def to_dict(self) -> dict:
        return asdict(self)


def sdk_version(vendor: Vendor) -> str:
    """The SDK version of a vendor's devices: stock CUDA torch names its CUDA runtime; a vendor build
    names its SDK in the torch build string, else the SDK folder or environment does."""
    if not vendor.torch_tag:
        return torch.version.cuda or ""
    m = re.search(r"\+" + re.escape(vendor.torch_tag) + r"[.\-_]?([0-9][0-9A-Za-z.\-]*)", torch.__version__)
    if m:
        return m.group(1)
    for candidate in vendor.sdk_version_files:
        path = os.path.join(vendor.sdk_root, candidate)
        if os.path.isfile(path):
            with open(path) as fh:
                return fh.read().strip().splitlines()[0] if fh else ""
    return os.environ.get(vendor.sdk_version_env, "") if vendor.sdk_version_env else ""


def torch_build() -> Optional[Vendor]:
    """The vendor whose own torch build this is (CoreX's), None for stock torch."""
    return identify(torch)


def detect() -> DeviceInfo:
    if not torch.cuda.is_available():
        return DeviceInfo(type="cpu", vendor="cpu", names=["cpu"], count=1, sdk="")
    count = torch.cuda.device_count()
    names = [torch.cuda.get_device_name(i) for i in range(count)]
    vendor = identify(torch, names) or VENDORS[CUDA_DEFAULT]
    return DeviceInfo(type="cuda", vendor=vendor.name, names=names, count=count, sdk=sdk_version(vendor))


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise KitError("hardware.device: 'cuda' requested but torch sees no CUDA/CoreX device")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def resolve_precision(requested: str, device: torch.device) -> str:
    """What can run: fp16 needs a GPU (and a grad scaler), bf16 needs support; else fp32, with a warning."""
    if requested == "fp16" and device.type != "cuda":
        warnings.warn("train.precision fp16 needs a CUDA/CoreX device; training in fp32 on the CPU", stacklevel=2)
        return "fp32"
    if requested == "bf16" and device.type == "cuda":
        supported = getattr(torch.cuda, "is_bf16_supported", lambda: False)()
        if not supported:
            warnings.warn("train.precision bf16 is not supported by this device; using fp16", stacklevel=2)
            return "fp16"
    return requested


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str):
    """A GradScaler for fp16 on a device, else None (bf16 and fp32 need no loss scaling)."""
    if precision != "fp16" or device.type != "cuda":
        return None
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        try:
            return amp.GradScaler("cuda")
        except TypeError:  # older signature
            pass
    return torch.cuda.amp.GradScaler()


def backward_and_step(loss: torch.Tensor, optimizer, scaler=None, clip=None) -> None:
    """Backward, optional gradient clipping (on unscaled gradients), optimizer step: with or without
    fp16 loss scaling. The one update rule that training, smoke tests and benchmarks share."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(optimizer)
            clip()
        scaler.step(optimizer)
        scaler.update()
        return
    loss.backward()
    if clip is not None:
        clip()
    optimizer.step()


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory of this process; on the CPU the peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except (ImportError, OSError):
        return float("nan")


def synchronize(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
