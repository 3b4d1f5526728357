"""What a run leaves behind besides checkpoints: metrics (JSONL + CSV), per-step records, environment.

Runs inside images: Python 3.8 syntax.
"""

import csv
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from ..resources import repo_root

EPOCH_FIELDS = [
    "epoch",
    "global_step",
    "lr",
    "train_loss",
    "top1",
    "top5",
    "eval_loss",
    "ema_top1",
    "ema_top5",
    "ema_eval_loss",
    "img_s_per_device",
    "img_s_total",
    "data_time_share",
    "peak_mem_mb",
    "epoch_time_s",
    "skipped_images",
    "world_size",
    "precision",
]


def append_jsonl(path: Path, record: Dict[str, object]) -> None:
    with open(str(path), "a") as fh:
        fh.write(json.dumps(record, sort_keys=False) + "\n")
        fh.flush()


def read_jsonl(path: Path) -> List[Dict[str, object]]:
    """Records of a JSONL file; a last line cut short by a crash is dropped."""
    out = []
    if not Path(path).is_file():
        return out
    with open(str(path)) as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def truncate_jsonl(path: Path, keep) -> None:
    """Rewrite a JSONL file keeping the records for which ``keep(record)`` holds (atomically)."""
    if not Path(path).is_file():
        return
    kept = [r for r in read_jsonl(path) if keep(r)]
    tmp = Path(str(path) + ".tmp")
    with open(str(tmp), "w") as fh:
        for r in kept:
            fh.write(json.dumps(r) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(str(tmp), str(path))


def write_csv(path: Path, records: List[Dict[str, object]], fields: List[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(str(tmp), str(path))


def _run(cmd: List[str], cwd=None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def kit_commit() -> str:
    root = repo_root()
    if root is None:
        return os.environ.get("WAVEMLP_KIT_COMMIT", "")
    commit = _run(["git", "rev-parse", "HEAD"], cwd=str(root))
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=str(root))
    return commit + ("-dirty" if commit and dirty else "")


def capture_environment(device_info: Dict[str, object]) -> Dict[str, object]:
    import timm
    import torch

    freeze = _run([sys.executable, "-m", "pip", "freeze", "--disable-pip-version-check"]).splitlines()
    return {
        "kit_commit": kit_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "devices": device_info,
        "corex_sdk": device_info.get("sdk", "") if device_info.get("vendor") == "iluvatar" else "",
        "env": {k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "CUDA_", "IX_", "SLURM_JOB", "OMP_"))},
        "pip_freeze": freeze,
    }
