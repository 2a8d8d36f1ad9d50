"""The drift report: nothing on the same distribution, the embeddings and the classes when they move."""

import numpy as np
import pandas as pd

from pipeline.monitoring.drift import compare


def records(count: int, shift: float, classes: list[str], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "class": rng.choice(classes, count), "probability": rng.uniform(0.5, 1, count),
        "novelty": rng.gamma(2, 0.02, count) + shift / 10,
        "embedding": list(rng.normal(shift, 1, (count, 16)).astype(np.float32)),
    })  # fmt: skip


def test_the_same_distribution_does_not_drift_and_a_moved_one_does():
    reference = records(1500, 0.0, ["a", "b", "c"], seed=0)
    same = compare(reference, records(600, 0.0, ["a", "b", "c"], seed=1), embedding_auc=0.55)
    assert same.figures["drifted"] == [] and same.figures["embedding_auc"] < 0.55, same.figures
    moved = compare(reference, records(600, 1.0, ["a", "a", "a", "b"], seed=2), embedding_auc=0.55)
    assert {"embedding", "class", "novelty"} <= set(moved.figures["drifted"]), moved.figures
    assert moved.figures["embedding_auc"] > 0.9 and "<html" in moved.html.lower()


def test_a_log_without_embeddings_is_compared_on_what_it_has():
    reference, current = records(300, 0.0, ["a", "b"], 0), records(300, 0.0, ["a", "b"], 1)
    current["embedding"] = None
    figures = compare(reference, current, embedding_auc=0.55).figures
    assert figures["embedding_auc"] is None and "class_distance" in figures and "embedding" not in figures["drifted"]


def test_a_confident_models_float32_probabilities_next_to_one_are_compared():
    """A model sure of every answer logs float32 probabilities of 0.99999994 and 1.0 (the test
    project's gated model did): too narrow a range for 10 histogram bins in float32."""
    reference, current = records(300, 0.0, ["a", "b"], 0), records(300, 0.0, ["a", "b"], 1)
    for frame in (reference, current):
        frame["probability"] = np.where(np.arange(len(frame)) % 2, np.float32(1.0), np.nextafter(np.float32(1), 0))
        frame["probability"] = frame["probability"].astype(np.float32)
    figures = compare(reference, current, embedding_auc=0.55).figures
    assert figures["probability_distance"] < 0.1 and "probability" not in figures["drifted"]
