"""Blending the CNN ensemble with a baseline: ``p = w * cnn + (1 - w) * baseline``.

The weight is chosen on out-of-fold predictions of both (each clip scored by models that never
saw it), over ``steps + 1`` equally spaced values in [0, 1], by MAP@k; ties go to the larger
``w`` (more CNN). Alignment is by file name, never by row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fsd.evaluation.metrics import reciprocal_ranks


def blend(cnn: np.ndarray, baseline: np.ndarray, weight: float) -> np.ndarray:
    """``weight * cnn + (1 - weight) * baseline`` (float32, rows still sum to 1)."""
    cnn = np.asarray(cnn, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if cnn.shape != baseline.shape:
        raise ValueError(f"cannot blend {cnn.shape} with {baseline.shape}")
    return (float(weight) * cnn + (1.0 - float(weight)) * baseline).astype(np.float32)


@dataclass
class BlendChoice:
    """The chosen weight, its MAP@k, and every candidate's score."""

    weight: float
    score: float
    weights: np.ndarray
    scores: np.ndarray
    accuracy: float
    k: int = 3

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"weight": self.weights, f"map{self.k}": self.scores})


def choose_weight(y_true: np.ndarray, cnn: np.ndarray, baseline: np.ndarray, steps: int,
                  k: int = 3) -> BlendChoice:
    """The ``w`` in ``linspace(0, 1, steps + 1)`` maximising MAP@k of the blend (ties: larger w)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    y = np.asarray(y_true, dtype=np.int64)
    if len(y) == 0:
        raise ValueError("no clips to choose a blend weight on")
    # rounded: linspace's 0.15000000000000002 would reach tables and tags as is
    weights = np.round(np.linspace(0.0, 1.0, int(steps) + 1), 12)
    scores = np.array([reciprocal_ranks(y, blend(cnn, baseline, w), k).mean() for w in weights])
    # ties: the larger weight; compare on rounded scores so float noise cannot break a tie
    rounded = np.round(scores, 12)
    best = int(np.flatnonzero(rounded == rounded.max())[-1])
    top1 = reciprocal_ranks(y, blend(cnn, baseline, weights[best]), 1)
    return BlendChoice(weight=round(float(weights[best]), 12), score=float(scores[best]), weights=weights,
                       scores=scores, accuracy=float(top1.mean()), k=k)


def align_probabilities(frame: pd.DataFrame, fnames: Sequence[str], labels: Sequence[str],
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``frame`` (fname, [label,] one column per class) in the order of ``fnames``.

    Returns (probs (len(fnames), classes) with zeros where missing, found mask). Raises
    ValueError when the frame's classes are not exactly ``labels`` (in any order) or when a
    name occurs twice.
    """
    if "fname" not in frame.columns:
        raise ValueError("baseline probabilities have no fname column")
    # fname, label, then the classes (by position, so a class may even be called "label")
    skip = 2 if list(frame.columns[:2]) == ["fname", "label"] else 1
    cols = [str(c) for c in frame.columns[skip:]]
    if sorted(cols) != sorted(map(str, labels)):
        raise ValueError(f"baseline classes {sorted(cols)} differ from the ensemble's "
                         f"{sorted(map(str, labels))}")
    names = frame["fname"].astype(str)
    if names.duplicated().any():
        raise ValueError(f"baseline probabilities list {names[names.duplicated()].iloc[0]!r} twice")
    by_name = pd.Series(np.arange(len(frame)), index=names.to_numpy())
    pos = by_name.reindex([str(f) for f in fnames])
    found = pos.notna().to_numpy()
    values = frame.iloc[:, skip:].set_axis(cols, axis=1)[[str(c) for c in labels]].to_numpy(
        np.float32)
    out = np.zeros((len(fnames), len(labels)), dtype=np.float32)
    out[found] = values[pos[found].to_numpy(np.int64)]
    return out, found
