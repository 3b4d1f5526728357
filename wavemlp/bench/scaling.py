"""``--gpus 1,8``: the same benchmark at several device counts, each under torchrun, and scalability.

Scalability is throughput(N) / (N x throughput(1)), as the seed's table reports it.

Runs inside images: Python 3.8 syntax.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

from ..errors import KitError


def parse_counts(text: str) -> List[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KitError("--device-counts: expected device counts like 1,8, got {!r}".format(text)) from None
    if not counts or any(c < 1 for c in counts):
        raise KitError("--device-counts: expected positive device counts like 1,8, got {!r}".format(text))
    return sorted(set(counts))


def scalability(results: Dict[int, Dict[str, object]]) -> Dict[int, float]:
    """{N: total(N) / (N * total(1))} for every N measured beside N = 1."""
    if 1 not in results:
        return {}
    base = float(results[1]["img_s_total"])
    return {n: float(r["img_s_total"]) / (n * base) for n, r in sorted(results.items()) if base > 0}


def run_counts(counts: Sequence[int], bench_args: List[str]) -> Dict[int, Dict[str, object]]:
    """Runs ``wmlp bench`` once per device count under torchrun; returns each count's JSON result."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="wmlp-bench-") as tmp:
        for n in counts:
            out = Path(tmp) / "n{}.json".format(n)
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "1",
                "--nproc-per-node",
                str(n),
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                "127.0.0.1:0",
                "-m",
                "wavemlp.cli",
                "bench",
                *bench_args,
                "--json",
                str(out),
            ]
            proc = subprocess.run(cmd, env=dict(os.environ))
            if proc.returncode != 0 or not out.is_file():
                raise KitError("bench with {} processes failed (exit {})".format(n, proc.returncode))
            results[n] = json.loads(out.read_text())
    return results
