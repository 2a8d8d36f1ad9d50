"""Drift of the embeddings: can a classifier tell the window's answers from the reference's?

A drift method for Evidently's `EmbeddingsDrift` (its report shows it as it shows its own): a
logistic regression on the standardised embeddings, scored out of fold over all answers (5
stratified folds, seeded), its ROC AUC the drift score; 0.5 when nothing tells them apart.
Evidently's own model method fits one unscaled SGD model to half of the answers and scores the
other half: the same window's AUC moved by a standard deviation of 0.01–0.10 with the split alone
(here at most 0.015), and a window with half its images darker scored 0.54 there against 0.71 here
(BENCHMARKS.md, "The embeddings' domain classifier, cross-validated").
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import pandas.core.dtypes.common as _common

# Evidently 0.7.23 imports a pandas helper that pandas 3 removed, in a legacy data-integrity test this
# project does not use: give it back (the identity) before Evidently is imported.
if not hasattr(_common, "infer_dtype_from_object"):
    _common.infer_dtype_from_object = lambda dtype: dtype

from evidently.legacy.metrics.data_drift import embeddings_drift
from evidently.legacy.metrics.data_drift.embedding_drift_methods import DriftMethod
from evidently.pydantic_utils import autoregister
from sklearn.decomposition import PCA

FOLDS = 5

# Evidently's report draws both sides' embeddings in two dimensions, each as a density, through a
# t-SNE of up to 5,000 of them: 27 s of a monitoring run's 33 s on 2 cores (a window of 3,000
# answers against 5,000), where the drift score takes 0.3 s. Drawn through their two principal
# components instead: 0.6 s in all (seeded, for the randomized solver sklearn picks for wide embeddings).
embeddings_drift.TSNE = partial(PCA, random_state=0)


def out_of_fold_auc(reference: np.ndarray, current: np.ndarray, folds: int = FOLDS, seed: int = 0) -> float:
    """The ROC AUC of a standardised logistic regression telling `current` rows from `reference`
    rows, each row scored by the model of the folds it was not trained on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = np.concatenate([reference, current]).astype(np.float64)
    side = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, rows, side, cv=split, method="predict_proba")[:, 1]
    return float(roc_auc_score(side, scores))


@autoregister
class CrossValidatedDrift(DriftMethod):
    """Evidently's drift-method interface to `out_of_fold_auc`: drift above `threshold`."""

    class Config:
        type_alias = "attention-pipeline:drift_method:CrossValidatedDrift"

    threshold: float = 0.55

    def __call__(self, current_emb: pd.DataFrame, reference_emb: pd.DataFrame) -> tuple[float, bool, str]:
        auc = out_of_fold_auc(reference_emb.to_numpy(), current_emb.to_numpy())
        return auc, auc > self.threshold, "model"
