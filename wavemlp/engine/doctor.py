"""``wmlp doctor``: what this environment has, in a form to paste into a bug report.

Runs inside images: Python 3.8 syntax.
"""

import os
import platform
import subprocess
import sys
from typing import Dict, List, Optional

from ..vendors import VENDORS, Vendor
from . import devices

SMI_TOOLS = tuple(v.smi for v in VENDORS.values() if v.smi)
# The loader path matters to every vendor: it decides which SDK libraries a process loads.
ENV_PREFIXES = tuple(sorted({p for v in VENDORS.values() for p in v.env_prefixes})) + ("LD_LIBRARY_PATH",)


def _smi(vendor: Vendor) -> Optional[Dict[str, object]]:
    path = vendor.locate_smi()
    if path is None:
        return None
    try:
        out = subprocess.run([path, *vendor.smi_list], capture_output=True, text=True, timeout=20)
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
    build = devices.torch_build()
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
        "corex": build is not None and build.name == "iluvatar",
        "torch_build": build.name if build else "",
        "nccl": _nccl_version(),
        "smi": {v.smi: _smi(v) for v in VENDORS.values() if v.smi},
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)},
    }
    if data:
        report["data"] = _dataset(data)
    return report


def _build_hint(report: Dict[str, object]) -> str:
    """Where to look when a vendor's own torch sees none of its devices."""
    build = VENDORS.get(str(report.get("torch_build") or ""))
    if build is None:
        return ""
    return " (this torch is a {} build: check {} and {})".format(
        build.label, ", ".join(build.device_files), build.container_visible_devices
    )


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
        library = VENDORS[report["vendor"]].collective_library if report["vendor"] in VENDORS else "NCCL"
        lines.append("SDK {}  {} {}".format(report["sdk"] or "n/a", library, report["nccl"] or "n/a"))
    else:
        lines.append("no CUDA/CoreX device visible to torch: training will run on the CPU" + _build_hint(report))
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
