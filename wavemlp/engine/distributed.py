"""Process groups from torchrun (env://) or directly from srun (SLURM_* variables).

Runs inside images: Python 3.8 syntax, torch >= 1.13.
"""

import os
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import KitError
from ..vendors import VENDORS
from .devices import detect


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "srun" or "none"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KitError(f"cannot expand SLURM_JOB_NODELIST {nodelist!r} with scontrol: {exc}") from None
    hosts = out.stdout.split()
    if not hosts:
        raise KitError(f"scontrol show hostnames {nodelist!r} printed no host")
    return hosts[0]


def from_environment(env=None) -> DistInfo:
    """Where this process sits. torchrun's variables win over Slurm's (torchrun may run under srun)."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), "srun")
    return DistInfo()


def init(info: DistInfo, backend: str, device: torch.device, timeout_s: int = 1800) -> None:
    """Join the process group; for srun launches derive the env:// rendezvous from Slurm's variables."""
    if not info.enabled:
        return
    if info.launcher == "srun":
        os.environ.setdefault("MASTER_ADDR", _first_host(os.environ["SLURM_JOB_NODELIST"]))
        os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(info.rank), str(info.world_size)
        os.environ["LOCAL_RANK"] = str(info.local_rank)
    if backend == "auto":
        # The devices' vendor names its collectives' backend (CoreX's IXCCL answers to nccl).
        backend = VENDORS[detect().vendor if device.type == "cuda" else "cpu"].collective_backend
    kwargs = {}
    if backend == "nccl" and device.type == "cuda":
        try:  # binds the group to this device; torch < 2.3 has no device_id argument
            dist.init_process_group(
                backend, init_method="env://", timeout=timedelta(seconds=timeout_s), device_id=device
            )
            return
        except TypeError:
            pass
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s), **kwargs)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_object(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values, device: Optional[torch.device] = None):
    """Element-wise sum over ranks of a list of floats (returns the list unchanged when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank(flag: bool, device: Optional[torch.device] = None) -> bool:
    """True when the flag is set on any rank: all ranks stop at the same step."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0
