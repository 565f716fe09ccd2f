"""The TTA ensemble: the self-contained bundle the served model loads, the Kaggle submission,
and the ensemble stage (select, score out of fold, blend, score test, register) without MLflow."""

from fsd.ensemble.bundle import BundleInfo, Ensemble, FoldFiles, build_bundle
from fsd.ensemble.submission import build_submission, class_prior, score_submission
from fsd.model.tta import geometric_mean, predict_ensemble, tta_lengths

__all__ = ["BundleInfo", "Ensemble", "FoldFiles", "build_bundle", "build_submission",
           "class_prior", "geometric_mean", "predict_ensemble", "score_submission",
           "tta_lengths"]
