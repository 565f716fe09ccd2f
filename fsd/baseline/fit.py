"""Fit a baseline on the store's folds: out-of-fold probabilities, scores, and a final model.

The folds are the store's own ``fold`` column, the CNN's folds, so baseline and CNN
out-of-fold predictions of a clip both come from models that never saw it and can be blended.
Clips without features (``frames <= 0`` or ``ok`` false) are left out. Fold ``k``'s model is
fitted on every other fold's clips and scores fold ``k``'s; the final model (for serving) is
fitted on all usable clips.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fsd.baseline.model import BaselineModel, clean_features
from fsd.evaluation.metrics import map_at_k, per_class_ap
from fsd.evaluation.oof import OOFScores, per_class_table, score_oof

log = logging.getLogger(__name__)

# (train features, train labels) -> a fitted object with predict_proba(x) -> (n, n_classes)
Fitter = Callable[[np.ndarray, np.ndarray], BaselineModel]


def usable_rows(index: pd.DataFrame) -> np.ndarray:
    """Positions of the clips that have features: frames > 0 and (where recorded) ok."""
    keep = index["frames"].to_numpy() > 0
    if "ok" in index.columns:
        keep &= index["ok"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    return np.flatnonzero(keep)


@dataclass
class BaselineResult:
    """One baseline on one store: out-of-fold probabilities, scores, timings, final model."""

    name: str
    labels: list[str]
    fnames: list[str]
    y: np.ndarray
    folds: np.ndarray
    probs: np.ndarray  # (n, classes) out of fold
    scores: OOFScores
    ap: np.ndarray  # (classes,) average precision, NaN for a class without clips
    fold_seconds: dict[int, float]
    final_seconds: float = 0.0
    model: BaselineModel | None = field(default=None, repr=False)
    skipped: int = 0  # clips without features
    n_features: int = 0
    final_train_map3: float = float("nan")  # the final model on its own training clips

    @property
    def oof_map3(self) -> float:
        return self.scores.overall

    @property
    def oof_accuracy(self) -> float:
        return self.scores.accuracy

    def metrics(self) -> dict[str, float]:
        """MLflow metrics: the headline ``oof_map3``/``oof_accuracy`` as the ensemble run
        names them and the macro mean of per-class AP ``oof_ap_macro`` (what the logged model
        is scored by), per fold ``oof/fold_<k>_map3`` and ``oof/fold_<k>_accuracy`` (no TTA:
        see :meth:`OOFScores.metrics`), fit times under ``perf/``. Per class the figures are
        a table (:meth:`per_class_frame`), not one metric per label."""
        out = dict(self.scores.metrics(group="oof", per_class=False))
        if np.isfinite(self.ap).any():
            out["oof_ap_macro"] = float(np.nanmean(self.ap))
        out["perf/fit_seconds"] = float(sum(self.fold_seconds.values()))
        out["perf/final_fit_seconds"] = float(self.final_seconds)
        if np.isfinite(self.final_train_map3):
            out["final_train_map3"] = float(self.final_train_map3)
        return out

    def params(self) -> dict[str, int]:
        """Counts (params, not metrics): clips scored, clips skipped, features per clip."""
        return {"fit.n_clips": int(len(self.y)), "fit.n_skipped": int(self.skipped),
                "fit.n_features": int(self.n_features)}

    def probabilities_frame(self) -> pd.DataFrame:
        """fname, label, one column per class: the out-of-fold probabilities."""
        frame = pd.DataFrame(self.probs, columns=list(self.labels))
        frame.insert(0, "label", np.asarray(self.labels, dtype=object)[self.y])
        frame.insert(0, "fname", self.fnames)
        return frame

    def per_class_frame(self) -> pd.DataFrame:
        table = per_class_table(self.scores)
        ap = dict(zip(self.labels, self.ap))
        table["ap"] = [ap[c] for c in table["label"]]
        return table


def oof_probabilities(x: np.ndarray, y: np.ndarray, folds: np.ndarray, n_classes: int,
                      fit: Fitter, progress: bool = False, desc: str = "baseline",
                      ) -> tuple[np.ndarray, dict[int, float]]:
    """Fold ``k``'s model (fitted on every other fold) scores fold ``k``'s rows.

    Returns (n, n_classes) probabilities and the fit seconds per fold.
    """
    from fsd import progress as progress_bars

    folds = np.asarray(folds, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    probs = np.zeros((len(y), n_classes), dtype=np.float32)
    seconds: dict[int, float] = {}
    fold_ids = sorted(set(folds.tolist()))
    if len(fold_ids) < 2:
        raise ValueError(f"out-of-fold scoring needs at least 2 folds, got {fold_ids}")
    for f in progress_bars.bar(fold_ids, desc=desc, unit="fold", enabled=progress):
        held = folds == f
        t0 = time.perf_counter()
        model = fit(x[~held], y[~held])
        seconds[int(f)] = time.perf_counter() - t0
        p = np.asarray(model.predict_proba(x[held]), dtype=np.float32)
        if p.shape != (int(held.sum()), n_classes):
            raise ValueError(f"fold {f}: predict_proba gave {p.shape}, want "
                             f"({int(held.sum())}, {n_classes})")
        probs[held] = p
        if progress_bars.lines(progress):
            log.info("%s: fold %d fitted in %.1f s (%d/%d)", desc, f, seconds[int(f)],
                     fold_ids.index(f) + 1, len(fold_ids))
    return probs, seconds


def run_baseline(store, name: str, bcfg, *, final: bool = True, progress: bool = False,
                 k: int = 3) -> BaselineResult:
    """Fit baseline ``name`` (``logreg`` or ``hgb``) on ``store``'s folds (see module doc)."""
    index = store.index
    labels = [str(c) for c in store.labels]
    n_classes = len(labels)
    rows = usable_rows(index)
    skipped = len(index) - len(rows)
    if skipped:
        log.info("%s: %d clips without features are left out", name, skipped)
    if len(rows) == 0:
        raise ValueError("no clips with features in the store")
    summary = np.asarray(store.summary)
    if summary.ndim != 2 or summary.shape[1] == 0:
        raise ValueError("the store has no summary features (summary.enabled is false)")
    x = clean_features(summary[rows])
    y = index["label_id"].to_numpy(np.int64)[rows]
    folds = index["fold"].to_numpy(np.int64)[rows]
    fnames = index["fname"].astype(str).to_numpy()[rows].tolist()

    def fit(xt: np.ndarray, yt: np.ndarray) -> BaselineModel:
        return BaselineModel.fit_new(name, bcfg, xt, yt, n_classes, labels)

    t0 = time.perf_counter()
    n_folds = len(set(folds.tolist()))
    bar_desc = f"baseline {name} ({n_folds} folds)"
    probs, seconds = oof_probabilities(x, y, folds, n_classes, fit, progress=progress,
                                       desc=bar_desc)
    scores = score_oof(fnames, y, folds, probs, labels, k=k)
    log.info("%s: out-of-fold MAP@%d %.4f, accuracy %.4f (%d clips, %d folds, %.1f s)", name, k,
             scores.overall, scores.accuracy, len(y), n_folds, time.perf_counter() - t0)
    result = BaselineResult(name=name, labels=labels, fnames=fnames, y=y, folds=folds,
                            probs=probs, scores=scores, ap=per_class_ap(y, probs, n_classes),
                            fold_seconds=seconds, skipped=skipped, n_features=x.shape[1])
    if final:
        t1 = time.perf_counter()
        result.model = fit(x, y)
        result.final_seconds = time.perf_counter() - t1
        result.final_train_map3 = map_at_k(y, result.model.predict_proba(x), k)
        log.info("%s: final model on all %d clips in %.1f s (in-sample MAP@%d %.4f)", name,
                 len(y), result.final_seconds, k, result.final_train_map3)
    return result
