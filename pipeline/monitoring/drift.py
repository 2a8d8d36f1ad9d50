"""Has what the served model is asked moved away from what it was trained for? An Evidently report
comparing a window of the prediction log with a reference (validation and test images, as the same
model answers them): the distributions of the answered classes (Jensen-Shannon distance), of the
answered class's probability, of the novelty score and of the images' brightness, contrast and
sharpness (`image_quality.py`; normed Wasserstein distances), and drift of the embeddings by a
domain classifier (`embedding_drift.py`: the out-of-fold ROC AUC of a classifier told to tell the
window from the reference; 0.5 when it cannot). The "unknown" rate is counted beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.monitoring.image_quality import QUALITY

DISTANCE = 0.1  # Evidently's default threshold for its distance methods
CHANCE_Z = 3.09  # the embeddings' ROC AUC must pass what chance gives one window in 1,000 (one-sided normal quantile)
CHANCE_P = 0.001  # and a column's move must be one that chance gives less often than once in 1,000 windows
NUMBERS = ("probability", "novelty", *QUALITY)  # the numerical columns compared, where both sides have them


def chance_auc(reference: int, current: int, z: float = CHANCE_Z) -> float:
    """The ROC AUC that the domain classifier reaches by chance, with no drift, in one window of
    1,000 (at `z`). Its out-of-fold AUC over all answers spreads by chance as a Mann-Whitney AUC of
    half of them does (measured: `tests/monitoring/test_drift.py`; the fold models' differences add
    to the spread of one AUC), with mean 0.5. A few hundred answers on each side reach 0.55 often;
    several thousand, almost never."""
    held_reference, held_current = max(reference // 2, 1), max(current // 2, 1)
    return 0.5 + z * ((held_reference + held_current + 1) / (12 * held_reference * held_current)) ** 0.5


@dataclass(frozen=True)
class DriftReport:
    """The figures the decision rests on, and the report a person reads."""

    figures: dict
    html: str


def as_frame(records: pd.DataFrame) -> pd.DataFrame:
    """Log records (or reference rows) with the embedding spread over columns e0, e1, …"""
    frame = records.reindex(columns=["class", *NUMBERS])  # a column the records lack: all missing
    frame["class"] = frame["class"].astype(str)
    # float64: a confident model's float32 probabilities can span less than Evidently's 10 histogram
    # bins can split in float32 (0.99999994 to 1.0), which numpy refuses
    frame[list(NUMBERS)] = frame[list(NUMBERS)].astype("float64")
    embeddings = records["embedding"].dropna()
    if len(embeddings) == len(records) and len(records):
        matrix = np.stack(embeddings.to_numpy())
        frame = pd.concat([frame, pd.DataFrame(matrix, columns=[f"e{i}" for i in range(matrix.shape[1])])], axis=1)
    return frame


def chance_p(reference: pd.Series, current: pd.Series) -> float:
    """How often two samples of one distribution differ this much: a χ² test of the counts of a
    categorical column, a two-sample Kolmogorov-Smirnov test of a numerical one."""
    from scipy import stats

    if not pd.api.types.is_numeric_dtype(reference):
        counts = pd.crosstab(pd.concat([reference, current]), np.r_[np.zeros(len(reference)), np.ones(len(current))])
        return float(stats.chi2_contingency(counts.to_numpy()).pvalue) if len(counts) > 1 else 1.0
    return float(stats.ks_2samp(reference, current).pvalue)


def compare(reference: pd.DataFrame, current: pd.DataFrame, embedding_auc: float) -> DriftReport:
    """Drift of `current` (log records) from `reference` (the same columns): a column drifted when
    its distance reaches DISTANCE and chance gives such a move less often than CHANCE_P (`chance_p`:
    the figure `<column>_p`; many answers make a harmless move significant, few make a large
    distance noise); the embeddings, when the domain classifier's ROC AUC passes `embedding_auc`
    and what chance gives answers this few (`chance_auc`; the figure `embedding_auc_threshold`)."""
    from pipeline.monitoring.embedding_drift import CrossValidatedDrift  # first: it makes Evidently importable

    # isort: split
    import evidently
    import evidently.metrics as metrics

    threshold = max(embedding_auc, chance_auc(len(reference), len(current)))
    reference, current = as_frame(reference.reset_index(drop=True)), as_frame(current.reset_index(drop=True))
    vectors = [c for c in reference.columns if c.startswith("e") and c[1:].isdigit() and c in current.columns]
    numbers = [c for c in NUMBERS if reference[c].notna().all() and current[c].notna().all()]
    definition = evidently.DataDefinition(
        numerical_columns=numbers, categorical_columns=["class"], embeddings={"embedding": vectors} if vectors else None
    )
    checks = [metrics.ValueDrift(column="class", method="jensenshannon", threshold=DISTANCE)]
    checks += [metrics.ValueDrift(column=c, method="wasserstein", threshold=DISTANCE) for c in numbers]
    if vectors:
        method = CrossValidatedDrift(threshold=threshold)
        checks.append(metrics.EmbeddingsDrift(embeddings_name="embedding", drift_method=method))
    snapshot = evidently.Report(checks).run(
        evidently.Dataset.from_pandas(current, data_definition=definition),
        evidently.Dataset.from_pandas(reference, data_definition=definition),
    )
    values = [metric["value"] for metric in snapshot.dict()["metrics"]]
    figures = {f"{column}_distance": float(value) for column, value in zip(["class", *numbers], values, strict=False)}
    figures["embedding_auc"] = float(values[-1]) if vectors else None
    figures["embedding_auc_threshold"] = threshold
    figures |= {f"{column}_p": chance_p(reference[column], current[column]) for column in ["class", *numbers]}
    figures["drifted"] = [
        c for c in ["class", *numbers] if figures[f"{c}_distance"] >= DISTANCE and figures[f"{c}_p"] < CHANCE_P
    ]
    if vectors and figures["embedding_auc"] > threshold:
        figures["drifted"].append("embedding")
    return DriftReport(figures, snapshot.get_html_str(as_iframe=False))
