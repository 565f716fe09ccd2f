"""The baseline models and the wrapper that keeps their columns aligned with the labels.

- ``logreg``: StandardScaler (or a normal-output QuantileTransformer, ``logreg_scaler``) +
  multinomial LogisticRegression: the reference a CNN must beat.
- ``hgb``: HistGradientBoostingClassifier (early stopping on a seeded, stratified share of the
  training clips).
- ``svc``: QuantileTransformer to a normal distribution + RBF SVC with Platt probabilities.
  The summary statistics are heavy-tailed (maxima, skews, run counts): ranks tame them where
  a StandardScaler leaves a few clips dominating the kernel distances.
- ``extratrees``: ExtraTreesClassifier (scale-free; averaged randomised trees).
- ``vote``: the soft vote (mean probability) of ``vote_members``, scale-sensitive members with
  ``vote_scaler``. Models that err differently average out each other's mistakes; on two
  real sets (240 instrument clips, ESC-10) the default vote beat each of its members out of
  fold (``docs/results.md``).

:class:`BaselineModel` wraps any of them: it cleans the features (NaN/inf -> 0), fits, and
returns probabilities with one column per label of the store even when a class is absent from
the training clips (that column is 0). It is saved with joblib as a plain dict, so a bundle
does not depend on this class's pickled layout.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from fsd.config import BASELINE_MODELS, BASELINE_SCALERS

log = logging.getLogger(__name__)

MODELS = BASELINE_MODELS
SCALERS = BASELINE_SCALERS
# Bump when fitting changes meaning (features, cleaning, estimator set-up), so finished
# baseline runs of older code are not reused.
BASELINE_VERSION = 2  # 2: logreg's params name its scaler
FORMAT = "fsd-baseline-1"
FEATURE_CAP = 1e12  # squares stay finite in float32


def vote_members(bcfg) -> list[str]:
    """The vote's members; a vote never votes for itself (a BaselineConfig built in code skips
    the config validation that refuses it)."""
    return [m for m in bcfg.vote_members if m != "vote"]


def model_params(name: str, bcfg, scaler: str | None = None) -> dict[str, Any]:
    """The settings that define model ``name`` (its config key is a hash of these).

    ``scaler`` overrides a scale-sensitive model's scaler (how ``vote`` builds its members).
    """
    if name == "logreg":
        return {"model": name, "C": float(bcfg.logreg_c), "max_iter": int(bcfg.logreg_max_iter),
                "scaler": scaler or bcfg.logreg_scaler, "seed": int(bcfg.seed),
                "version": BASELINE_VERSION}
    if name == "hgb":
        return {"model": name, "max_iter": int(bcfg.hgb_max_iter),
                "learning_rate": float(bcfg.hgb_learning_rate),
                "max_leaf_nodes": int(bcfg.hgb_max_leaf_nodes), "l2": float(bcfg.hgb_l2),
                "validation_fraction": float(bcfg.hgb_validation_fraction),
                "seed": int(bcfg.seed), "version": BASELINE_VERSION}
    if name == "svc":
        return {"model": name, "C": float(bcfg.svc_c), "scaler": scaler or "quantile",
                "max_clips": int(bcfg.svc_max_clips), "seed": int(bcfg.seed),
                "version": BASELINE_VERSION}
    if name == "extratrees":
        return {"model": name, "n_estimators": int(bcfg.extratrees_n_estimators),
                "max_leaf_nodes": int(bcfg.extratrees_max_leaf_nodes), "seed": int(bcfg.seed),
                "version": BASELINE_VERSION}
    if name == "vote":
        return {"model": name, "members": [model_params(m, bcfg, bcfg.vote_scaler)
                                           for m in vote_members(bcfg)],
                "version": BASELINE_VERSION}
    raise ValueError(f"unknown baseline model {name!r}; known: {', '.join(MODELS)}")


def stratified_cap(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Sorted positions of about ``cap`` clips of ``y`` (all of them when ``cap`` is 0 or not
    smaller): each class keeps its share, rounded up (so a few more than ``cap``, and no class
    that has clips loses them all)."""
    y = np.asarray(y)
    if not cap or len(y) <= cap:
        return np.arange(len(y))
    rng = np.random.default_rng([int(seed), len(y), int(cap)])
    keep = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        n = max(1, math.ceil(len(members) * cap / len(y)))
        keep.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(keep))


def clean_features(x: np.ndarray) -> np.ndarray:
    """float32 copy with NaN and +-inf replaced by 0 and magnitudes capped at ``FEATURE_CAP``.

    A summary statistic of a degenerate clip (silence, a single tone) can be undefined or
    explode; one such value must not turn a whole column's scaling into NaN.
    """
    out = np.array(x, dtype=np.float32, copy=True)
    if out.ndim != 2:
        raise ValueError(f"summary features must be (clips, features), got shape {out.shape}")
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(out, -FEATURE_CAP, FEATURE_CAP, out=out)
    return out


def _can_stratify(y: np.ndarray, fraction: float) -> bool:
    """Whether sklearn's stratified early-stopping split of ``y`` can be made."""
    if fraction <= 0:
        return False
    _, counts = np.unique(y, return_counts=True)
    n_test = math.ceil(fraction * len(y))
    return counts.min() >= 2 and n_test >= len(counts) and len(y) - n_test >= len(counts)


def _scaler(kind: str, n_samples: int, seed: int):
    from sklearn.preprocessing import QuantileTransformer, StandardScaler

    if kind == "quantile":
        # as many quantiles as clips up to sklearn's 1,000: no warning on small sets
        return QuantileTransformer(n_quantiles=max(2, min(1000, n_samples)),
                                   output_distribution="normal", random_state=seed)
    return StandardScaler()


class ClipCap:
    """A classifier fitted on about ``max_clips`` of its training clips (:func:`stratified_cap`):
    what bounds a model whose cost grows faster than its data. Predicts as its inner model."""

    _estimator_type = "classifier"

    def __init__(self, estimator, max_clips: int, seed: int):
        self.estimator, self.max_clips, self.seed = estimator, max_clips, seed

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"estimator": self.estimator, "max_clips": self.max_clips, "seed": self.seed}

    def set_params(self, **params) -> ClipCap:
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __sklearn_tags__(self):
        return self.estimator.__sklearn_tags__()

    def fit(self, x: np.ndarray, y: np.ndarray) -> ClipCap:
        from sklearn.base import clone

        rows = stratified_cap(y, self.max_clips, self.seed)
        if len(rows) < len(y):
            log.info("fitting %s on %d of its %d clips (the cap)", type(self.estimator).__name__,
                     len(rows), len(y))
        self.estimator_ = clone(self.estimator).fit(x[rows], np.asarray(y)[rows])
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.estimator_.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.estimator_.predict(x)


def make_estimator(name: str, bcfg, y: np.ndarray, scaler: str | None = None):
    """A fresh, unfitted scikit-learn estimator for ``name`` (``y``: the training labels)."""
    p = model_params(name, bcfg, scaler)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline

        return Pipeline([("scale", _scaler(p["scaler"], len(y), p["seed"])),
                         ("logreg", LogisticRegression(C=p["C"], max_iter=p["max_iter"],
                                                       random_state=p["seed"]))])
    if name == "svc":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline
        from sklearn.svm import SVC

        # Platt-scaled probabilities from an internal split (what sklearn >= 1.9 recommends
        # over SVC(probability=True)), with fewer folds where a class has few clips; a class
        # with a single clip cannot be split, and only libsvm's own calibration copes with it.
        fit_y = np.asarray(y)[stratified_cap(y, p["max_clips"], p["seed"])]
        folds = min(5, int(np.unique(fit_y, return_counts=True)[1].min()))
        if folds >= 2:
            svc = CalibratedClassifierCV(
                SVC(C=p["C"], kernel="rbf", gamma="scale", random_state=p["seed"]),
                method="sigmoid", cv=folds, ensemble=False)
        else:
            svc = SVC(C=p["C"], kernel="rbf", gamma="scale", random_state=p["seed"],
                      probability=True)
        model = Pipeline([("scale", _scaler(p["scaler"], len(fit_y), p["seed"])), ("svc", svc)])
        if p["max_clips"] and len(fit_y) < len(y):
            return ClipCap(model, p["max_clips"], p["seed"])
        return model
    if name == "extratrees":
        from sklearn.ensemble import ExtraTreesClassifier

        # n_jobs=1: the baselines run beside the fold workers, one core's worth
        return ExtraTreesClassifier(n_estimators=p["n_estimators"], max_features="sqrt",
                                    max_leaf_nodes=p["max_leaf_nodes"] or None,
                                    n_jobs=1, random_state=p["seed"])
    if name == "vote":
        from sklearn.ensemble import VotingClassifier

        return VotingClassifier([(m, make_estimator(m, bcfg, y, bcfg.vote_scaler))
                                 for m in vote_members(bcfg)], voting="soft")
    from sklearn.ensemble import HistGradientBoostingClassifier

    early = _can_stratify(y, p["validation_fraction"])
    if p["validation_fraction"] > 0 and not early:
        log.info("hgb: %d training clips are too few to hold out a stratified %.0f%% for early "
                 "stopping; fitting all %d iterations", len(y), 100 * p["validation_fraction"],
                 p["max_iter"])
    return HistGradientBoostingClassifier(
        max_iter=p["max_iter"], learning_rate=p["learning_rate"],
        max_leaf_nodes=p["max_leaf_nodes"], l2_regularization=p["l2"],
        early_stopping=early, validation_fraction=p["validation_fraction"] if early else None,
        n_iter_no_change=10, random_state=p["seed"])


class BaselineModel:
    """One fitted baseline: ``predict_proba(summaries)`` -> (n, n_classes), label-aligned."""

    def __init__(self, name: str, n_classes: int, labels: list[str] | None = None,
                 params: dict[str, Any] | None = None):
        self.name = name
        self.n_classes = int(n_classes)
        self.labels = list(labels) if labels is not None else None
        self.params = dict(params or {})
        self.estimator = None
        self.classes: np.ndarray | None = None  # label ids the estimator's columns stand for
        self.n_features: int | None = None
        self.n_iter: int | None = None

    @classmethod
    def fit_new(cls, name: str, bcfg, x: np.ndarray, y: np.ndarray, n_classes: int,
                labels: list[str] | None = None) -> BaselineModel:
        model = cls(name, n_classes, labels, model_params(name, bcfg))
        return model.fit(x, y, bcfg)

    def fit(self, x: np.ndarray, y: np.ndarray, bcfg) -> BaselineModel:
        x = clean_features(x)
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0:
            raise ValueError(f"{self.name}: no training clips")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"{self.name}: label ids must be in [0, {self.n_classes})")
        self.n_features = x.shape[1]
        present = np.unique(y)
        if len(present) < 2:  # nothing to discriminate: every clip is that one class
            self.estimator, self.classes = None, present
            return self
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import threadpool_limits

        est = make_estimator(self.name, bcfg, y)
        with warnings.catch_warnings(record=True) as caught, \
                threadpool_limits(bcfg.threads or None):
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(x, y)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning("%s did not converge in %s iterations (raise baseline.logreg_max_iter "
                        "or lower baseline.logreg_c)", self.name, self.params.get("max_iter"))
        self.estimator = est
        self.classes = np.asarray(est.classes_, dtype=np.int64)
        last = est[-1] if hasattr(est, "steps") else est
        n_iter = getattr(last, "n_iter_", None)
        self.n_iter = int(np.max(n_iter)) if n_iter is not None else None
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, n_classes) float32; classes the model never saw get probability 0."""
        if self.classes is None:
            raise ValueError(f"{self.name} is not fitted")
        x = clean_features(x)
        if self.n_features is not None and x.shape[1] != self.n_features:
            raise ValueError(f"{self.name} was fitted on {self.n_features} features, "
                             f"got {x.shape[1]}")
        out = np.zeros((len(x), self.n_classes), dtype=np.float32)
        if self.estimator is None:
            out[:, self.classes[0]] = 1.0
            return out
        out[:, self.classes] = self.estimator.predict_proba(x)
        return out

    # --- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        import joblib

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format": FORMAT, "name": self.name, "n_classes": self.n_classes,
                     "labels": self.labels, "params": self.params, "estimator": self.estimator,
                     "classes": None if self.classes is None else self.classes.tolist(),
                     "n_features": self.n_features, "n_iter": self.n_iter}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BaselineModel:
        import joblib

        data = joblib.load(Path(path))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a saved fsd baseline model ({FORMAT})")
        model = cls(data["name"], data["n_classes"], data.get("labels"), data.get("params"))
        model.estimator = data["estimator"]
        model.classes = None if data["classes"] is None else np.asarray(data["classes"], np.int64)
        model.n_features = data.get("n_features")
        model.n_iter = data.get("n_iter")
        return model

    def __repr__(self) -> str:
        return f"BaselineModel({self.name!r}, classes={self.n_classes}, features={self.n_features})"
