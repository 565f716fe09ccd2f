"""Baselines: scikit-learn models on the store's summary features, on the CNN's folds.

``fsd.baseline.model``: the estimators (``logreg``, ``hgb``) and the label-aligned
:class:`BaselineModel` saved with joblib; ``fsd.baseline.fit``: out-of-fold probabilities,
scores and the final model; ``fsd.baseline.blend``: the CNN + baseline blend and its weight.
No MLflow here: the ``baseline`` entry point logs the results.
"""

from fsd.baseline.blend import BlendChoice, align_probabilities, blend, choose_weight
from fsd.baseline.fit import BaselineResult, oof_probabilities, run_baseline, usable_rows
from fsd.baseline.model import MODELS, BaselineModel, clean_features, model_params

__all__ = ["MODELS", "BaselineModel", "BaselineResult", "BlendChoice", "align_probabilities",
           "blend", "choose_weight", "clean_features", "model_params", "oof_probabilities",
           "run_baseline", "usable_rows"]
