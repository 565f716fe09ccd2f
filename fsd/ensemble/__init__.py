"""The TTA ensemble: batched multi-fold test-time augmentation, out-of-fold scoring, the
Kaggle submission, and the self-contained bundle the served model loads."""

from fsd.ensemble.bundle import BundleInfo, Ensemble, FoldFiles, build_bundle
from fsd.ensemble.oof import OOFScores, score_oof
from fsd.ensemble.submission import build_submission, class_prior, score_submission
from fsd.model.tta import geometric_mean, predict_ensemble, tta_lengths

__all__ = ["BundleInfo", "Ensemble", "FoldFiles", "OOFScores", "build_bundle", "build_submission",
           "class_prior", "geometric_mean", "predict_ensemble", "score_oof", "score_submission",
           "tta_lengths"]
