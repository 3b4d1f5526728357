"""Device power sampled in the background with the vendor's management tool, while a benchmark runs.

Runs inside images: Python 3.8 syntax.
"""

import os
import subprocess
import threading
from typing import List, Optional

from ..vendors import CUDA_DEFAULT, VENDORS, smi_vendor


def find_smi() -> Optional[str]:
    """The first vendor management tool this machine has, in the vendor table's order."""
    for vendor in VENDORS.values():
        path = vendor.locate_smi()
        if path:
            return path
    return None


def read_power_watts(smi: str) -> List[float]:
    """Current draw per device, in watts."""
    # A tool under another name (a site's wrapper) gets the default vendor's syntax, which the others share.
    vendor = smi_vendor(smi) or VENDORS[CUDA_DEFAULT]
    out = subprocess.run([smi, *vendor.smi_power], capture_output=True, text=True, timeout=10)
    values = []
    for line in out.stdout.splitlines():
        try:
            values.append(float(line.strip().split()[0]))
        except (ValueError, IndexError):
            continue
    return values


class PowerSampler:
    """Samples every ``interval`` seconds between start() and stop(); ``summary()`` gives mean/max per device."""

    def __init__(self, interval: float = 0.5, smi: Optional[str] = None):
        self.smi = smi if smi is not None else find_smi()
        self.interval = interval
        self.samples: List[List[float]] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                values = read_power_watts(self.smi)
            except (OSError, subprocess.SubprocessError):
                values = []
            if values:
                self.samples.append(values)
            self._stop.wait(self.interval)

    def start(self) -> "PowerSampler":
        if self.smi:
            self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def summary(self):
        """{'mean_w': total mean over devices, 'max_w': ...} or the string 'n/a' when nothing was read."""
        if not self.samples:
            return "n/a"
        totals = [sum(s) for s in self.samples]
        return {
            "mean_w": sum(totals) / len(totals),
            "max_w": max(totals),
            "samples": len(totals),
            "devices": len(self.samples[-1]),
            "tool": os.path.basename(self.smi),
        }
