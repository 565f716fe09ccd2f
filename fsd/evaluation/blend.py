"""Blending the CNN ensemble with a baseline: ``p = w * cnn + (1 - w) * baseline``.

The weight is chosen on out-of-fold predictions of both (each clip scored by models that never
saw it), over ``steps + 1`` equally spaced values in [0, 1], by MAP@k; ties go to the larger
``w`` (more CNN). Alignment is by file name, never by row order.

Which (baseline, weight) a blend uses is a *rule* (:func:`choose_rule`, ``ensemble.blend_rule``):

- ``best``: the pair with the highest pooled MAP@k. With five folds of 48 clips that choice is
  noisy: on the instrument set it scored 0.881 out of fold (chosen on the other folds) against
  0.891 for its own partner, the vote, alone.
- ``shrink``: ``best``'s weight moved halfway toward equal weights (0.5), on the grid.
- ``majority``: the best single model (the CNN alone, or one baseline alone) unless ``best``'s
  blend beats it on a strict majority of the folds it is chosen on; a pooled gain that comes
  from one lucky fold no longer buys the blend.
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


BLEND_RULES = ("best", "shrink", "majority")


@dataclass
class RuleChoice:
    """What a rule chose: ``candidate`` (index of the baseline blended; -1: there was none),
    ``weight`` (1: the CNN alone, 0: that baseline alone), its MAP@k and top-1 accuracy on the
    rows it was chosen on, that candidate's weight grid, and why (one line)."""

    candidate: int
    weight: float
    score: float
    accuracy: float
    grid: BlendChoice | None
    reason: str


def _fold_scores(rr: np.ndarray, folds: np.ndarray) -> np.ndarray:
    return np.array([rr[folds == f].mean() for f in np.unique(folds)])


def choose_rule(y_true: np.ndarray, cnn: np.ndarray, baselines: Sequence[np.ndarray],
                folds: np.ndarray, steps: int, rule: str = "best", k: int = 3) -> RuleChoice:
    """The (baseline, weight) ``rule`` picks on these rows (see the module docstring).

    ``baselines`` are aligned row by row with ``cnn`` (the CNN's own probabilities where a
    baseline has no row: the blend there is the CNN's whatever the weight); ``folds`` says
    which fold each row belongs to (``majority`` counts folds). Ties: the earlier baseline,
    the larger weight, and for ``majority`` the blend loses a fold it only ties."""
    if rule not in BLEND_RULES:
        raise ValueError(f"unknown blend rule {rule!r}; one of {', '.join(BLEND_RULES)}")
    y = np.asarray(y_true, dtype=np.int64)
    folds = np.asarray(folds)
    if len(folds) != len(y):
        raise ValueError("folds must have one row per clip")

    def scored(candidate: int, weight: float, grid: BlendChoice | None, reason: str,
               ) -> RuleChoice:
        probs = cnn if candidate < 0 else blend(cnn, baselines[candidate], weight)
        return RuleChoice(candidate=candidate, weight=float(weight),
                          score=float(reciprocal_ranks(y, probs, k).mean()),
                          accuracy=float(reciprocal_ranks(y, probs, 1).mean()), grid=grid,
                          reason=reason)

    if not baselines:
        return scored(-1, 1.0, None, "no baseline to blend with")
    grids = [choose_weight(y, cnn, b, steps, k=k) for b in baselines]
    best = max(range(len(grids)), key=lambda i: (round(grids[i].score, 12), -i))
    grid = grids[best]
    if rule == "best":
        return scored(best, grid.weight, grid, f"the best pooled MAP@{k} (w={grid.weight:g})")
    if rule == "shrink":
        # halfway toward 0.5, then onto the grid (a weight the table lists)
        w = round(float(np.round((grid.weight + 0.5) / 2 * steps) / steps), 12)
        return scored(best, w, grid, f"w={grid.weight:g} shrunk toward 0.5")
    # majority: the best single model is the default the blend must beat fold by fold
    singles = [(best, 1.0, reciprocal_ranks(y, cnn, k))]  # w=1: the CNN alone
    singles += [(i, 0.0, reciprocal_ranks(y, b, k)) for i, b in enumerate(baselines)]
    alone = max(range(len(singles)), key=lambda j: (round(singles[j][2].mean(), 12), -j))
    single, single_w, single_rr = singles[alone]
    what = "the CNN alone" if alone == 0 else "the baseline alone"
    if grid.weight in (0.0, 1.0):  # the best pair is a single model already
        return scored(single, single_w, grids[single], f"{what}: no blend scores better pooled")
    mine = _fold_scores(reciprocal_ranks(y, blend(cnn, baselines[best], grid.weight), k), folds)
    theirs = _fold_scores(single_rr, folds)
    wins = int((np.round(mine, 12) > np.round(theirs, 12)).sum())
    if wins * 2 > len(mine):
        return scored(best, grid.weight, grid, f"the blend (w={grid.weight:g}) beats {what} "
                                               f"on {wins} of {len(mine)} folds")
    return scored(single, single_w, grids[single],
                  f"{what}: the blend (w={grid.weight:g}) beats it on only {wins} of "
                  f"{len(mine)} folds")


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
