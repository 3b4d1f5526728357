"""Stopping a run and telling its launcher how it ended: signals, the stop file, exit codes, ``.exit`` files.

Stopping. A handled signal (``train.requeue_signals``, SIGTERM and SIGUSR1 by default, plus SIGINT for
Ctrl-C) or the stop file ``<run_dir>/.preempt`` asks the run to finish the step in flight, checkpoint
and exit with ``REQUEUE_EXIT_CODE``. Data-loader workers ignore these signals
(:func:`wavemlp.data.loader.init_worker`): Slurm and terminals signal every process of a job, and a
worker that died would kill the trainer before it saved. The stop file exists because torchrun does not
forward every signal (USR1, USR2) to its workers: a script that traps a signal touches the file on the
shared filesystem instead, and every rank of every node sees it at its next step.

Exit codes of ``wmlp train`` (every rank):

- 0: finished.
- 2 (``BAD_INPUT_EXIT_CODE``): bad input, a KitError (recipe, data set, run folder); running it again
  the same way fails the same way.
- 3 (``NONFINITE_EXIT_CODE``): the loss became NaN or infinite; the last good checkpoint is kept.
- 75 (``REQUEUE_EXIT_CODE``, EX_TEMPFAIL, "temporary failure, try again"): stopped on request after
  saving its state; start it again with ``--resume auto``.
- anything else (1, death by signal): a crash.

The ``.exit`` protocol. torchrun reports any failed worker as its own exit status 1, so a launch script
cannot see the codes above in torchrun's status. Instead each rank, just before it exits with one of
0, 2, 3 or 75, writes that code (decimal digits and a newline) to ``<run_dir>/.exit/rank<R>``, ``R``
its global rank, atomically (a temporary file in the same folder, then a rename). A crashed rank
writes nothing. Nothing is written when the run folder does not exist yet. A script using the
protocol:

1. removes ``<run_dir>/.exit`` before it starts the trainers: one script per job does it (the batch
   script, or node rank 0 of a launch). Trainers write only after all nodes met, so files seen by the
   other nodes are this launch's, unless their torchrun failed before node rank 0 even started;
2. when torchrun exits 0, exits 0;
3. otherwise exits with the highest-priority code found in ``<run_dir>/.exit/rank*``: 2, then 3,
   then 75; when none of those is there, with torchrun's own status.

Runs inside images: Python 3.8 syntax. Torch-free: ``wmlp train`` records its exit through this module
even when torch or the recipe fails to load.
"""

import os
import signal
from pathlib import Path
from typing import Callable, List, Optional, Sequence

REQUEUE_EXIT_CODE = 75
NONFINITE_EXIT_CODE = 3
BAD_INPUT_EXIT_CODE = 2
STOP_FILE_NAME = ".preempt"
EXIT_DIR_NAME = ".exit"
# Codes a rank records in <run_dir>/.exit, and the order in which a launch script picks among them.
RECORDED_EXIT_CODES = (0, BAD_INPUT_EXIT_CODE, NONFINITE_EXIT_CODE, REQUEUE_EXIT_CODE)
EXIT_PRIORITY = (BAD_INPUT_EXIT_CODE, NONFINITE_EXIT_CODE, REQUEUE_EXIT_CODE)
# Ctrl-C stops a run the way its requeue signals do (checkpoint, exit 75), whatever the recipe lists.
ALWAYS_HANDLED = ("SIGINT",)


class StopRequest:
    """Set by a handled signal or by the stop file; read once per step by the training loop."""

    def __init__(self, signals: Sequence[str], stop_file: Optional[Path] = None,
                 on_signal: Optional[Callable[[str], None]] = None):
        self.received: Optional[str] = None
        self.on_signal = on_signal
        self.stop_file = stop_file
        self._previous = {}
        self._names: List[str] = list(dict.fromkeys(list(signals) + list(ALWAYS_HANDLED)))

    def install(self) -> "StopRequest":
        for name in self._names:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        if signum == signal.SIGINT and self.received == "SIGINT":
            # A second Ctrl-C: the user will not wait for the checkpoint. Abort now (exit 130).
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        # Only a flag (and a line): the step in flight finishes, then the loop saves and exits.
        first = self.received is None
        self.received = signal.Signals(signum).name
        if first and self.on_signal is not None:
            self.on_signal(self.received)

    @property
    def requested(self) -> bool:
        if self.received is None and self.stop_file is not None and self.stop_file.exists():
            self.received = f"stop file {self.stop_file}"
        return self.received is not None

    def clear_stop_file(self) -> None:
        if self.stop_file is not None:
            try:
                os.unlink(str(self.stop_file))
            except FileNotFoundError:
                pass


def exit_file(run_dir, rank: int) -> Path:
    """``<run_dir>/.exit/rank<R>``: where rank ``R`` records its exit code."""
    return Path(run_dir) / EXIT_DIR_NAME / "rank{}".format(int(rank))


def record_exit(run_dir, rank: int, code: int) -> Optional[Path]:
    """Record ``code`` for a launch script (the ``.exit`` protocol above); the file, or None when the code
    is not one the protocol records or the run folder does not exist. Never raises: a rank on its way
    out must not fail because a shared filesystem did."""
    if code not in RECORDED_EXIT_CODES or run_dir is None or not Path(run_dir).is_dir():
        return None
    path = exit_file(run_dir, rank)
    tmp = path.with_name(".{}.tmp{}".format(path.name, os.getpid()))
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text("{}\n".format(int(code)))
        os.replace(str(tmp), str(path))
    except OSError:
        return None
    return path


def recorded_exit_code(run_dir, launcher_code: int) -> int:
    """What a launch script exits with (step 2 and 3 of the protocol), for scripts written in Python."""
    if launcher_code == 0:
        return 0
    found = set()
    for path in (Path(run_dir) / EXIT_DIR_NAME).glob("rank*"):
        try:
            found.add(int(path.read_text().strip()))
        except (OSError, ValueError):
            continue
    for code in EXIT_PRIORITY:
        if code in found:
            return code
    return launcher_code
