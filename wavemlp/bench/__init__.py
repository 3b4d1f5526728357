"""Benchmarks: training/inference throughput, data-pipeline speed, power, scaling over device counts.

May import: torch, timm, ``engine`` (its component layer builds the step that is timed), ``data``, ``recipe``,
``vendors``. The training step timed is the trainer's own, so bench numbers are training numbers.
"""
