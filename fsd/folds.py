"""Cross-validation folds: the recipe's StratifiedKFold, or the dataset's own fold column."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from fsd.config import FoldConfig

log = logging.getLogger(__name__)


class FoldWarning(UserWarning):
    """Folds were made, but not as evenly stratified as asked (a class is too small)."""


def assign_folds(
    labels: Sequence[str],
    cfg: FoldConfig,
    dataset_folds: Sequence[int] | np.ndarray | None = None,
    groups: Sequence[str] | None = None,
) -> np.ndarray:
    """One fold id (0-based int) per clip, in the order of ``labels``.

    Default: ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` over the labels in
    the order given (the recipe's 10 folds with seed 20180629 on train.csv's order).

    A class with fewer clips than ``n_folds`` cannot be in every fold: then a deterministic
    fallback deals every clip a fold (see :func:`_deal_folds`) and a :class:`FoldWarning`
    names the small classes. Fewer clips than folds in all is a ValueError.

    With ``cfg.use_dataset_folds`` the dataset's folds are returned after validation: every
    clip has one, and the values are exactly ``0..n-1`` (n distinct folds, n >= 2), whatever
    ``cfg.n_folds`` says.

    With ``cfg.group_column`` (and ``groups``, one value per clip) every group stays inside one
    fold: ``StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)``, so no score comes
    from another take of a recording the model trained on.
    """
    y = np.asarray([str(x) for x in labels])
    if cfg.use_dataset_folds:
        return _validated_dataset_folds(dataset_folds, len(y), cfg.n_folds)
    k = int(cfg.n_folds)
    if k < 2:
        raise ValueError(f"folds.n_folds must be at least 2, got {k}")
    if len(y) < k:
        raise ValueError(f"cannot split {len(y)} clips into folds.n_folds={k} folds: "
                         "every fold needs at least one clip")
    if cfg.group_column:
        return _group_folds(y, groups, k, cfg)
    small = sorted((c, n) for c, n in Counter(y.tolist()).items() if n < k)
    if not small:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.seed)
        folds = np.full(len(y), -1, dtype=np.int64)
        for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y)):
            folds[test_idx] = fold
        return folds
    shown = ", ".join(f"{c} ({n})" for c, n in small[:10])
    more = f" and {len(small) - 10} more" if len(small) > 10 else ""
    warnings.warn(
        f"{len(small)} class(es) have fewer clips than folds.n_folds={k}: {shown}{more}; "
        "folds are dealt class by class instead of by StratifiedKFold, so some folds lack them",
        FoldWarning, stacklevel=2,
    )
    return _deal_folds(y, k, cfg.seed)


def _group_folds(y: np.ndarray, groups: Sequence[str] | None, k: int, cfg: FoldConfig) -> np.ndarray:
    if groups is None or len(groups) != len(y):
        raise ValueError(f"folds.group_column={cfg.group_column!r} is set but the dataset gives "
                         f"no group per clip (does its CSV have that column?)")
    g = np.asarray([str(v) for v in groups])
    n_groups = len(np.unique(g))
    if n_groups < k:
        raise ValueError(f"folds.group_column={cfg.group_column!r}: {n_groups} groups cannot "
                         f"fill folds.n_folds={k} folds")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=cfg.seed)
    folds = np.full(len(y), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn's "least populated class" note
        for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, g)):
            folds[test_idx] = fold
    return folds


def _deal_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The fallback: clips grouped by class (sorted), shuffled within it, dealt to folds in turn.

    Dealing continues across class boundaries, so fold sizes differ by at most one and each
    class lands in as many different folds as it has clips (up to k). StratifiedKFold would
    warn here, or refuse outright when every class is smaller than k.
    """
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    folds = np.empty(len(y), dtype=np.int64)
    folds[order] = np.arange(len(y)) % k
    return folds


def _validated_dataset_folds(dataset_folds, n_clips: int, n_folds_cfg: int) -> np.ndarray:
    if dataset_folds is None:
        raise ValueError("folds.use_dataset_folds is set but the dataset gives no folds "
                         "(set data.fold_column to the CSV's fold column)")
    raw = pd.Series(np.asarray(dataset_folds).ravel())
    if len(raw) != n_clips:
        raise ValueError(f"dataset folds: {len(raw)} values for {n_clips} clips")
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() | (values < 0) | (values % 1 != 0)
    if bad.any():
        raise ValueError(f"dataset folds: {int(bad.sum())} of {n_clips} clips have no valid fold "
                         f"(first: {raw[bad].iloc[0]!r}); every clip needs an integer >= 0")
    folds = values.to_numpy().astype(np.int64)
    distinct = np.unique(folds)
    n = len(distinct)
    if n < 2:
        raise ValueError(f"dataset folds: need at least 2 distinct folds, got {distinct.tolist()}")
    if distinct.max() >= n:
        raise ValueError(f"dataset folds must be 0..{n - 1} with every fold present; "
                         f"got {distinct.tolist()}")
    if n != n_folds_cfg:
        log.info("using the dataset's %d folds (folds.n_folds=%d is ignored)", n, n_folds_cfg)
    return folds


def fold_counts(labels: Sequence[str], folds: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Clips per label (rows) and fold (columns), with totals, for reports and plots."""
    return pd.crosstab(pd.Series(list(labels), name="label"),
                       pd.Series(np.asarray(folds), name="fold"),
                       margins=True, margins_name="total")
