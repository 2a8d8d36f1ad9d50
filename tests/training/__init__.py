"""Tests of pipeline/training: device and precision, training steps, data-parallel ranks."""
