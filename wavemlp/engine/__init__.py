"""The training/evaluation engine: a library (loop, checkpoints, signals, distributed, devices)."""

from .signals import NONFINITE_EXIT_CODE, REQUEUE_EXIT_CODE

__all__ = ["NONFINITE_EXIT_CODE", "REQUEUE_EXIT_CODE"]
