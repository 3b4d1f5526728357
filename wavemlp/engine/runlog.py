"""Console and log-file output of a run: rank 0 speaks, and writes ``train.log`` (appended across restarts).

Runs inside images: Python 3.8 syntax.
"""

import sys
import time
from pathlib import Path
from typing import Optional


class _Progress:
    """A tqdm bar on an interactive rank-0 console; nothing elsewhere (the log gets epoch lines)."""

    def __init__(self, bar):
        self.bar = bar

    def update(self, loss=None, lr=None, img_s=None) -> None:
        if self.bar is None:
            return
        post = {}
        if loss is not None:
            post["loss"] = f"{loss:.4f}"
        if lr is not None:
            post["lr"] = f"{lr:.2e}"
        if img_s is not None:
            post["img/s"] = f"{img_s:.1f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunLog:
    def __init__(self, path: Optional[Path], rank: int = 0, show_progress: Optional[bool] = None):
        self.rank = rank
        self.fh = open(str(path), "a", buffering=1) if path is not None else None
        if show_progress is None:
            show_progress = rank == 0 and sys.stderr.isatty()
        self.show_progress = show_progress
        if self.fh is not None:
            self.fh.write("=== {} start (pid {}) ===\n".format(time.strftime("%Y-%m-%d %H:%M:%S"), _pid()))

    def _emit(self, level: str, msg: str, all_ranks: bool = False) -> None:
        if self.rank != 0 and not all_ranks and level == "info":
            return
        line = "wmlp: {}{}".format("" if level == "info" else level + ": ", msg)
        if all_ranks and self.rank != 0:
            line = f"wmlp[rank {self.rank}]: {msg}"
        print(line, file=sys.stderr if level != "info" else sys.stdout, flush=True)
        if self.fh is not None:
            self.fh.write("{} {}\n".format(time.strftime("%H:%M:%S"), line))

    def info(self, msg: str, all_ranks: bool = False) -> None:
        self._emit("info", msg, all_ranks)

    def warn(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)

    def progress(self, total: int, initial: int = 0, desc: str = "") -> _Progress:
        if not self.show_progress:
            return _Progress(None)
        from tqdm import tqdm

        return _Progress(tqdm(total=total, initial=initial, desc=desc, leave=False))

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _pid() -> int:
    import os

    return os.getpid()
