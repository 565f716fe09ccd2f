"""Out-of-fold scoring: every train clip scored by the model that did not see it (the CNN
ensemble with TTA, or a baseline).

MAP@3 and top-1 accuracy overall and per fold, MAP@3 per class and a per-clip table (the
plots: :mod:`fsd.evaluation.plots`).
Per class is the mean over the clips of that class of 1/rank of their label in the top 3 — the
share of the overall metric each class earns, which is what shows where the ensemble is weak.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fsd.evaluation.metrics import reciprocal_ranks


@dataclass
class OOFScores:
    """MAP@k (and top-1 accuracy) out of fold; ``frame`` has one row per clip (fname, fold,
    label, top labels, rr)."""

    k: int
    overall: float
    per_fold: dict[int, float]
    per_class: dict[str, float]
    class_counts: dict[str, int]
    frame: pd.DataFrame = field(repr=False)
    accuracy: float = float("nan")
    per_fold_accuracy: dict[int, float] = field(default_factory=dict)

    def metrics(self, group: str = "tta", per_class: bool = True) -> dict[str, float]:
        """Flat MLflow metric names: the headline ``oof_map3`` and ``oof_accuracy``, then per
        fold ``<group>/fold_<k>_map3`` and ``<group>/fold_<k>_accuracy`` and (``per_class``)
        per class ``<group>_class_map3/<label>``. ``group`` says what scored the clips (e.g.
        ``cnn`` for the CNN fold ensemble with TTA, ``blend`` for the blend, ``oof`` for a
        baseline), so these never read as a fold run's own ``val_map3`` (fixed lengths, no
        TTA)."""
        out = {f"oof_map{self.k}": self.overall}
        if np.isfinite(self.accuracy):
            out["oof_accuracy"] = self.accuracy
        out.update(self.fold_metrics(group))
        if per_class:
            out.update({f"{group}_class_map{self.k}/{metric_safe(c)}": v
                        for c, v in self.per_class.items() if np.isfinite(v)})
        return out

    def fold_metrics(self, group: str) -> dict[str, float]:
        """Per fold: ``<group>/fold_<k>_map3`` and ``<group>/fold_<k>_accuracy``."""
        out = {f"{group}/fold_{f}_map{self.k}": v for f, v in self.per_fold.items()}
        out.update({f"{group}/fold_{f}_accuracy": v for f, v in self.per_fold_accuracy.items()})
        return out


def metric_safe(name: str) -> str:
    """MLflow metric names allow alphanumerics and _ - . space / only."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", name)


def score_oof(fnames: Sequence[str], y_true: np.ndarray, folds: np.ndarray, probs: np.ndarray,
              labels: Sequence[str], k: int = 3) -> OOFScores:
    """MAP@k of out-of-fold ``probs`` overall, per fold and per class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    folds = np.asarray(folds, dtype=np.int64)
    if not (len(fnames) == len(y_true) == len(folds) == len(probs)):
        raise ValueError("fnames, y_true, folds and probs must have one row per clip")
    if len(y_true) == 0:
        raise ValueError("no out-of-fold clips to score")
    rr = reciprocal_ranks(y_true, probs, k)
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    names = np.asarray(labels, dtype=object)
    frame = pd.DataFrame({"fname": list(map(str, fnames)), "fold": folds,
                          "label": names[y_true], "rr": rr})
    for j in range(k):
        frame[f"pred_{j + 1}"] = names[top[:, j]]
    frame["p_true"] = np.asarray(probs)[np.arange(len(y_true)), y_true]
    fold_ids = sorted(set(folds.tolist()))
    per_fold = {int(f): float(rr[folds == f].mean()) for f in fold_ids}
    hit = top[:, 0] == y_true
    per_fold_acc = {int(f): float(hit[folds == f].mean()) for f in fold_ids}
    per_class, counts = {}, {}
    for c, name in enumerate(labels):
        sel = y_true == c
        counts[str(name)] = int(sel.sum())
        per_class[str(name)] = float(rr[sel].mean()) if sel.any() else float("nan")
    return OOFScores(k=k, overall=float(rr.mean()), per_fold=per_fold, per_class=per_class,
                     class_counts=counts, frame=frame, accuracy=float(hit.mean()),
                     per_fold_accuracy=per_fold_acc)


def per_class_table(scores: OOFScores) -> pd.DataFrame:
    return pd.DataFrame({
        "label": list(scores.per_class),
        f"map{scores.k}": list(scores.per_class.values()),
        "clips": [scores.class_counts[c] for c in scores.per_class],
    }).sort_values(f"map{scores.k}", kind="stable")


def per_fold_table(scored: dict[str, OOFScores]) -> pd.DataFrame:
    """Per fold: its clips and, for each named set of scores (``{"cnn": ..., "blend": ...}``),
    ``<name>_map3`` and ``<name>_accuracy``: the per-fold figures as one table, not one metric
    (one single-bar chart) each."""
    first = next(iter(scored.values()))
    counts = first.frame["fold"].value_counts()
    frame = pd.DataFrame({"fold": sorted(first.per_fold)})
    frame["clips"] = [int(counts.get(f, 0)) for f in frame["fold"]]
    for name, s in scored.items():
        frame[f"{name}_map{s.k}"] = [s.per_fold.get(f, np.nan) for f in frame["fold"]]
        frame[f"{name}_accuracy"] = [s.per_fold_accuracy.get(f, np.nan) for f in frame["fold"]]
    return frame
