"""Benchmarks: training/inference throughput, data-pipeline speed, power, scaling over device counts."""
