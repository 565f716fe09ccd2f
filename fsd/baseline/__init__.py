"""Baselines: scikit-learn models on the store's summary features, on the CNN's folds.

``fsd.baseline.model``: the estimators and the label-aligned :class:`BaselineModel` saved with
joblib; ``fsd.baseline.fit``: out-of-fold probabilities, scores and the final model. Scoring
and the blend with the CNN are :mod:`fsd.evaluation`'s. No MLflow here: the ``baseline``
entry point logs the results.
"""

from fsd.baseline.fit import BaselineResult, oof_probabilities, run_baseline, usable_rows
from fsd.baseline.model import MODELS, BaselineModel, clean_features, model_params

__all__ = ["MODELS", "BaselineModel", "BaselineResult", "clean_features", "model_params",
           "oof_probabilities", "run_baseline", "usable_rows"]
