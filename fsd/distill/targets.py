"""A student's training targets: the hard labels mixed with the teacher's soft predictions.

``target = hard_weight * onehot(label) + (1 - hard_weight) * soften(teacher, temperature)``;
an unlabeled clip (label -1) gets the softened teacher alone. ``soften`` raises each
probability to ``1 / temperature`` and renormalises: the softmax of the teacher's log
probabilities at that temperature (Hinton et al. 2015), so a temperature above 1 spreads the
teacher's mass over its runner-up classes, which is what the student learns from it.

The honest split (:func:`fold_teacher_rows`): the student scored on fold ``k`` trains on the
other folds' clips with targets from fold ``k``'s own teacher (the fold-``k`` CNN and the
fold-``k`` baseline, neither of which saw fold ``k``), so nothing of fold ``k``, neither its
clips nor its labels nor a prediction made by a model that saw them, reaches it.
"""

from __future__ import annotations

import numpy as np

UNLABELED = -1


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs ** (1 / T)`` renormalised per row (float32); T = 1 leaves them as they are."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
    logits = np.log(p) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def mix_targets(y: np.ndarray, teacher: np.ndarray, hard_weight: float,
                temperature: float) -> np.ndarray:
    """Per clip ``hard_weight * onehot(y) + (1 - hard_weight) * soften(teacher)``; a clip with
    ``y == -1`` (unlabeled) gets ``soften(teacher)``. Rows sum to 1."""
    y = np.asarray(y, dtype=np.int64)
    teacher = np.asarray(teacher)
    if teacher.ndim != 2 or len(teacher) != len(y):
        raise ValueError(f"teacher must be (clips, classes) with {len(y)} rows, got "
                         f"{teacher.shape}")
    if not 0.0 <= hard_weight <= 1.0:
        raise ValueError(f"hard_weight must be in [0, 1], got {hard_weight}")
    if (y >= teacher.shape[1]).any() or (y < UNLABELED).any():
        raise ValueError("labels must be class ids or -1 (unlabeled)")
    soft = soften(teacher, temperature)
    labeled = y >= 0
    out = soft.copy()
    hard = np.zeros_like(soft)
    hard[np.flatnonzero(labeled), y[labeled]] = 1.0
    out[labeled] = hard_weight * hard[labeled] + (1.0 - hard_weight) * soft[labeled]
    return out.astype(np.float32)


def fold_teacher_rows(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """The honest split for the student scored on ``fold``: (rows it trains on: every other
    fold's labelled clip; rows it is scored on: ``fold``'s). Clips outside any fold
    (unlabeled, fold -1) are added by the caller, with targets from the same fold's teacher."""
    folds = np.asarray(folds, dtype=np.int64)
    if fold not in set(folds.tolist()):
        raise ValueError(f"fold {fold} holds no clips")
    return np.flatnonzero((folds != fold) & (folds >= 0)), np.flatnonzero(folds == fold)


def unlabeled_rows(label_ids: np.ndarray) -> np.ndarray:
    """Rows without a label (``UNLABELED``: :class:`fsd.distill.pool.StudentPool`'s test
    clips). Every student trains on them with its own teacher's targets; none is scored."""
    return np.flatnonzero(np.asarray(label_ids, dtype=np.int64) == UNLABELED)
