"""``wmlp doctor``: what this environment has, in a form to paste into a bug report.

Runs inside images: Python 3.8 syntax.
"""

import os
import platform
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

from . import devices

SMI_TOOLS = ("nvidia-smi", "ixsmi")


def _smi(tool: str) -> Optional[Dict[str, object]]:
    path = shutil.which(tool) or (os.path.join(devices.COREX_ROOT, "bin", tool) if tool == "ixsmi" else None)
    if not path or not os.path.exists(path):
        return None
    try:
        out = subprocess.run([path, "-L"], capture_output=True, text=True, timeout=20)
        lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
        return {"path": path, "rc": out.returncode, "devices": lines}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"path": path, "error": str(exc)}


def _nccl_version() -> str:
    import torch

    try:
        v = torch.cuda.nccl.version()
    except Exception:  # no NCCL in this build, or no CUDA
        return ""
    return ".".join(str(x) for x in v) if isinstance(v, tuple) else str(v)


def _dataset(root: str) -> Dict[str, object]:
    from ..data import ImageDataset

    report: Dict[str, object] = {"path": root}
    for split in ("train", "val"):
        try:
            ds = ImageDataset(root, split)
            report[split] = {
                "images": len(ds),
                "classes": ds.num_classes,
                "list_file": bool(getattr(ds, "list_file", None)),
            }
        except Exception as exc:  # report every problem rather than stop at the first
            report[split] = {"error": str(exc)}
    return report


def diagnose(data: Optional[str] = None) -> Dict[str, object]:
    import timm
    import torch

    from ..data import decoder_name

    info = devices.detect()
    report: Dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_path": os.path.dirname(torch.__file__),
        "timm": timm.__version__,
        "jpeg_decoder": decoder_name(),
        "vendor": info.vendor,
        "devices": info.names if info.type == "cuda" else [],
        "device_count": info.count if info.type == "cuda" else 0,
        "sdk": info.sdk,
        "cuda_build": torch.version.cuda or "",
        "corex": devices.is_corex(),
        "nccl": _nccl_version(),
        "smi": {tool: _smi(tool) for tool in SMI_TOOLS},
        "env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(("CUDA_VISIBLE", "IX_", "NCCL_", "COREX", "LD_LIBRARY_PATH"))
        },
    }
    if data:
        report["data"] = _dataset(data)
    return report


def format_report(report: Dict[str, object]) -> List[str]:
    lines = [
        "python {}  torch {}  timm {}  JPEG decoder {}".format(
            report["python"], report["torch"], report["timm"], report["jpeg_decoder"]
        ),
        "torch at {}".format(report["torch_path"]),
    ]
    if report["device_count"]:
        lines.append(
            "vendor {}: {} device(s): {}".format(report["vendor"], report["device_count"], ", ".join(report["devices"]))
        )
        lines.append("SDK {}  NCCL {}".format(report["sdk"] or "n/a", report["nccl"] or "n/a"))
    else:
        lines.append(
            "no CUDA/CoreX device visible to torch: training will run on the CPU"
            + (" (this torch is a CoreX build: check /dev/iluvatar* and IX_VISIBLE_DEVICES)" if report["corex"] else "")
        )
    for tool, found in report["smi"].items():
        if found is None:
            lines.append("{}: not found".format(tool))
        else:
            lines.append(
                "{}: {} ({})".format(
                    tool,
                    found.get("path"),
                    "; ".join(found.get("devices", [])) or found.get("error", "no devices listed"),
                )
            )
    for key, value in report["env"].items():
        lines.append("{}={}".format(key, value))
    data = report.get("data")
    if data:
        for split in ("train", "val"):
            s = data[split]
            lines.append(
                "data {}: {}".format(
                    split, s["error"] if "error" in s else "{} images, {} classes".format(s["images"], s["classes"])
                )
            )
    return lines
