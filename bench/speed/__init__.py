"""Throughput, each measured in a fresh process: the tutorial reference, the train stage's step,
inference (what `make bench` runs), and data-parallel training."""
