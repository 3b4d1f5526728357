"""Training checkpoints: atomic writes, a rolling history of resumable states, the best k by metric.

Protocol (what a launcher and a resuming run rely on):
- ``checkpoints/last-e{epoch:04d}-s{step:07d}.pth`` is a complete state after ``step`` finished steps
  of ``epoch`` (step 0 of epoch e+1 is the end of epoch e). The newest ``keep_last`` are kept, so a
  file cut short by a crash always leaves an older valid one.
- ``checkpoints/best-e{epoch:04d}.pth`` are the best ``keep_best`` epoch-end states by the metric;
  ``checkpoints/best.pth`` is a copy of the very best (what ``wmlp eval`` and ``make demo`` read).
- Every file is written to a temporary name in the same folder, fsynced, then renamed: a reader sees
  the old file or the new one, never half of one.

Everything saved is tensors, numbers, strings and containers, so ``torch.load(weights_only=True)`` reads
it on every torch version that has that flag. Runs inside images: Python 3.8 syntax.
"""

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

from ..models.checkpoint import CheckpointError, read_checkpoint

LAST_RE = re.compile(r"^last-e(\d+)-s(\d+)\.pth$")
BEST_RE = re.compile(r"^best-e(\d+)\.pth$")
FORMAT = "wavemlp-kit/train-checkpoint/1"


def atomic_save(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + dst.name + ".", suffix=".tmp", dir=str(dst.parent))
    os.close(fd)
    try:
        shutil.copyfile(str(src), tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, str(dst))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(dst.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> Dict[str, object]:
    import random

    import numpy as np

    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),  # the Mersenne twister words; version and gauss follow
        "python_rest": [random.getstate()[0], random.getstate()[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype("int64")),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, object]) -> None:
    import random

    import numpy as np

    version, gauss = state["python_rest"]
    random.setstate((version, tuple(state["python"]), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


class CheckpointManager:
    """Writes and finds the checkpoints of one run folder (rank 0 writes; every rank may read)."""

    def __init__(self, run_dir: Path, keep_last: int = 3, keep_best: int = 10, higher_is_better: bool = True):
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(2, keep_last)  # two at least, so a truncated newest file has a fallback
        self.keep_best = keep_best
        self.higher_is_better = higher_is_better

    # --- writing ---------------------------------------------------------------------------------
    def save_last(self, state: Dict[str, object], epoch: int, step: int) -> Path:
        state = dict(state, format=FORMAT)
        path = self.dir / f"last-e{epoch:04d}-s{step:07d}.pth"
        atomic_save(state, path)
        for old in self.last_files()[self.keep_last :]:
            old.unlink()
        return path

    def save_best(self, state: Dict[str, object], epoch: int, metric: float) -> Optional[Path]:
        """Keep the state if it ranks among the best k; returns its path when kept."""
        ranked = self.best_ranking()
        candidate = (metric, epoch)
        ranked_metrics = [m for m, _, _ in ranked]
        if len(ranked) >= self.keep_best:
            worst = min(ranked_metrics) if self.higher_is_better else max(ranked_metrics)
            better = metric > worst if self.higher_is_better else metric < worst
            if not better:
                return None
        path = self.dir / f"best-e{epoch:04d}.pth"
        atomic_save(dict(state, format=FORMAT, best_metric=metric), path)
        ranked = self.best_ranking()
        for _, _, old in ranked[self.keep_best :]:
            old.unlink()
        top = self.best_ranking()[0]
        if (top[0], top[1]) == candidate:
            atomic_copy(path, self.dir / "best.pth")
        return path

    # --- reading ---------------------------------------------------------------------------------
    def last_files(self) -> List[Path]:
        """Resumable states, newest (highest epoch, then step) first."""
        found = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = LAST_RE.match(p.name)
                if m:
                    found.append(((int(m.group(1)), int(m.group(2))), p))
        return [p for _, p in sorted(found, reverse=True)]

    def best_ranking(self) -> List[Tuple[float, int, Path]]:
        out = []
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = BEST_RE.match(p.name)
                if not m:
                    continue
                try:
                    metric = float(torch.load(str(p), map_location="cpu", weights_only=True)["best_metric"])
                except Exception:  # a damaged best file ranks last and is replaced first
                    metric = float("-inf") if self.higher_is_better else float("inf")
                out.append((metric, int(m.group(1)), p))
        return sorted(out, key=lambda t: (t[0], t[1]), reverse=self.higher_is_better)

    def latest_valid(self, log=print) -> Optional[Tuple[Path, Dict[str, object]]]:
        """The newest state that reads back whole; each unreadable newer file is reported and passed over."""
        for path in self.last_files():
            try:
                state = load_state(path)
            except CheckpointError as exc:
                log(f"warning: {exc} (falling back to the previous checkpoint)")
                continue
            return path, state
        return None


def load_state(path: Path) -> Dict[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a wavemlp-kit training checkpoint")
    for key in ("state_dict", "optimizer", "epoch", "step"):
        if key not in state:
            raise CheckpointError(f"{path} lacks '{key}'")
    return state
