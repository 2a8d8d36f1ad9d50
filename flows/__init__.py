"""Prefect flows: the training flow (the main job) and scheduled retraining, over the DVC stages."""
