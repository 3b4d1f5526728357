"""Preemption: a signal or a stop file asks the run to checkpoint at the next step boundary and exit.

The exit code ``REQUEUE_EXIT_CODE`` (75, EX_TEMPFAIL: "temporary failure, try again") tells a
launcher that the run saved its state and wants to be started again with ``--resume auto``.
The stop file exists because torchrun does not forward every signal (USR1, USR2) to its workers:
a batch script that traps the signal can touch ``<run_dir>/.preempt`` on the shared filesystem instead.

Runs inside images: Python 3.8 syntax.
"""

import os
import signal
from pathlib import Path
from typing import List, Optional, Sequence

REQUEUE_EXIT_CODE = 75
NONFINITE_EXIT_CODE = 3
STOP_FILE_NAME = ".preempt"


class StopRequest:
    """Set by a handled signal or by the stop file; read once per step by the training loop."""

    def __init__(self, signals: Sequence[str], stop_file: Optional[Path] = None):
        self.received: Optional[str] = None
        self.stop_file = stop_file
        self._previous = {}
        self._names: List[str] = list(signals)

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
        # Only a flag: the step in flight finishes, then the loop saves and exits.
        self.received = signal.Signals(signum).name

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
