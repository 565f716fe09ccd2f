"""MAP@k (Kaggle's definition), per-class average precision, and the validation loss."""

from __future__ import annotations

import numpy as np


def reciprocal_ranks(y_true, probs, k: int = 3) -> np.ndarray:
    """Per clip 1/rank of the true class among the top ``k`` scores, else 0.

    ``y_true``: (n,) integer class ids; ``probs``: (n, classes) scores. Ties are broken by
    the lower class index (stable sort), so the result is deterministic.
    """
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probs)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must be (n, classes) with n={len(y)}, got {p.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    hit = top == y[:, None]
    return np.where(hit.any(axis=1), 1.0 / (np.argmax(hit, axis=1) + 1), 0.0)


def map_at_k(y_true, probs, k: int = 3) -> float:
    """Kaggle's MAP@k: the mean over clips of :func:`reciprocal_ranks`."""
    rr = reciprocal_ranks(y_true, probs, k)
    if len(rr) == 0:
        raise ValueError("map_at_k needs at least one clip")
    return float(np.mean(rr))


def top_k_labels(probs: np.ndarray, labels: list[str], k: int = 3) -> list[list[str]]:
    """The ``k`` best label names per row, best first."""
    top = np.argsort(-np.asarray(probs), axis=1, kind="stable")[:, :k]
    return [[labels[j] for j in row] for row in top]


def categorical_crossentropy(y_true, probs, eps: float = 1e-7) -> float:
    """Mean cross-entropy of integer labels under ``probs`` (clipped as Keras does)."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def per_class_ap(y_true, probs, n_classes: int | None = None) -> np.ndarray:
    """Average precision per class (one-vs-rest); NaN for classes absent from ``y_true``."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(probs)
    n_classes = p.shape[1] if n_classes is None else n_classes
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        pos = y == c
        if pos.any():
            out[c] = average_precision_score(pos, p[:, c])
    return out


def chance_map_at_k(n_classes: int, k: int = 3) -> float:
    """MAP@k of guessing ``k`` distinct classes uniformly at random: sum(1/r for r <= k) / n."""
    n = int(n_classes)
    if n < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    return float(sum(1.0 / r for r in range(1, min(k, n) + 1)) / n)


def at_chance(accuracy: float, n_clips: int, n_classes: int) -> bool:
    """Whether a top-1 ``accuracy`` on ``n_clips`` is not above chance (1 / ``n_classes``)
    by more than two binomial standard errors: a model that learned nothing distinguishable."""
    if n_classes < 2 or n_clips < 1 or not np.isfinite(accuracy):
        return False
    p = 1.0 / n_classes
    return bool(accuracy <= p + 2.0 * np.sqrt(p * (1.0 - p) / n_clips))
