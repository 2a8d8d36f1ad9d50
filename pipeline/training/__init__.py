"""The training machinery: device and precision, the training steps, checkpoints, data-parallel ranks."""
