"""assign_folds: the recipe's StratifiedKFold, the small-class fallback, the dataset's folds."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from fsd.config import FoldConfig
from fsd.folds import FoldWarning, assign_folds, fold_counts


def labels_of(counts: dict[str, int], seed: int = 0) -> list[str]:
    labels = [c for c, n in counts.items() for _ in range(n)]
    return list(np.random.default_rng(seed).permutation(labels))


def test_recipe_folds_are_sklearns_stratified_kfold():
    labels = labels_of({f"c{i}": 20 + i for i in range(12)})
    cfg = FoldConfig()  # 10 folds, seed 20180629
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every class fills every fold
        folds = assign_folds(labels, cfg)
    assert folds.dtype == np.int64 and folds.shape == (len(labels),)
    expected = np.empty(len(labels), dtype=int)
    skf = StratifiedKFold(10, shuffle=True, random_state=20180629)
    for k, (_, idx) in enumerate(skf.split(np.zeros(len(labels)), labels)):
        expected[idx] = k
    np.testing.assert_array_equal(folds, expected)
    counts = fold_counts(labels, folds).drop(index="total", columns="total")
    assert (counts.min(axis=1) >= 2).all()  # each class in each fold


def test_folds_follow_the_seed_and_the_order():
    labels = labels_of({"a": 30, "b": 30, "c": 30})
    base = assign_folds(labels, FoldConfig(n_folds=5, seed=1))
    np.testing.assert_array_equal(base, assign_folds(labels, FoldConfig(n_folds=5, seed=1)))
    assert not np.array_equal(base, assign_folds(labels, FoldConfig(n_folds=5, seed=2)))


@pytest.mark.parametrize("counts", [
    {"big": 40, "small": 3, "one": 1},  # some classes too small (sklearn warns)
    {"a": 9, "b": 8, "c": 9, "d": 1},  # every class too small (sklearn refuses)
])
def test_small_classes_fall_back_and_warn(counts):
    labels = labels_of(counts)
    cfg = FoldConfig(n_folds=10, seed=7)
    with pytest.warns(FoldWarning, match="fewer clips than folds.n_folds=10") as record:
        folds = assign_folds(labels, cfg)
    assert "one (1)" in str(record[0].message) or "d (1)" in str(record[0].message)
    assert set(folds.tolist()) == set(range(10))  # every fold used, every clip assigned
    sizes = np.bincount(folds, minlength=10)
    assert sizes.max() - sizes.min() <= 1
    y = np.asarray(labels)
    for c, n in counts.items():
        # a small class lands in as many different folds as it has clips
        assert len(set(folds[y == c].tolist())) == min(n, 10)
    with pytest.warns(FoldWarning):
        np.testing.assert_array_equal(folds, assign_folds(labels, cfg))


def test_fewer_clips_than_folds_is_an_error():
    with pytest.raises(ValueError, match="cannot split 3 clips into folds.n_folds=5"):
        assign_folds(["a", "b", "a"], FoldConfig(n_folds=5))


def test_dataset_folds_are_used_when_asked():
    cfg = FoldConfig(n_folds=10, use_dataset_folds=True)
    given = [0, 1, 2, 0, 1, 2]
    folds = assign_folds(list("aaabbb"), cfg, given)
    assert folds.dtype == np.int64 and folds.tolist() == given
    assert assign_folds(list("aaabbb"), cfg, pd.Series(given, dtype=float)).tolist() == given


@pytest.mark.parametrize("given, message", [
    (None, "gives no folds"),
    ([0, 1, 2], "3 values for 6 clips"),
    ([0, 1, -1, 0, 1, 0], "no valid fold"),
    ([0, 1, np.nan, 0, 1, 0], "no valid fold"),
    ([0, 1, 1.5, 0, 1, 0], "no valid fold"),
    ([0, 2, 2, 0, 2, 0], r"must be 0..1 with every fold present; got \[0, 2\]"),
    ([1, 2, 3, 1, 2, 3], r"must be 0..2"),
    ([0] * 6, "at least 2 distinct folds"),
])
def test_bad_dataset_folds_are_clear_errors(given, message):
    cfg = FoldConfig(use_dataset_folds=True)
    with pytest.raises(ValueError, match=message):
        assign_folds(list("aaabbb"), cfg, given)


def test_fold_counts_table():
    table = fold_counts(["a", "a", "b"], [0, 1, 1])
    assert table.loc["a", 0] == 1 and table.loc["b", 1] == 1 and table.loc["total", "total"] == 3


def test_full_dataset_folds(shared_data):
    csv = shared_data / "fsdkaggle2018-meta" / "train_post_competition.csv"
    if not csv.is_file():
        pytest.skip(f"{csv} is absent")
    labels = pd.read_csv(csv)["label"]
    folds = assign_folds(labels, FoldConfig())
    sizes = np.bincount(folds)
    assert len(sizes) == 10 and sizes.max() - sizes.min() <= 1 and sizes.sum() == 9473


def test_group_column_keeps_every_group_in_one_fold():
    rng = np.random.default_rng(0)
    groups = [f"rec{g}" for g in rng.integers(0, 60, 300)]
    labels = [f"c{int(g[3:]) % 5}" for g in groups]  # a group has one label, like takes
    folds = assign_folds(labels, FoldConfig(n_folds=5, group_column="src_file"), groups=groups)
    frame = pd.DataFrame({"g": groups, "f": folds})
    assert (frame.groupby("g")["f"].nunique() == 1).all()
    assert sorted(np.unique(folds)) == [0, 1, 2, 3, 4]
    plain = assign_folds(labels, FoldConfig(n_folds=5))
    assert (pd.DataFrame({"g": groups, "f": plain}).groupby("g")["f"].nunique() > 1).any(), \
        "without the group column takes of one recording do spread over folds"
    with pytest.raises(ValueError, match="no group per clip"):
        assign_folds(labels, FoldConfig(n_folds=5, group_column="src_file"))
    with pytest.raises(ValueError, match="3 groups cannot fill"):
        assign_folds(["a", "b"] * 5, FoldConfig(n_folds=5, group_column="g"),
                     groups=["x", "y", "z"] * 3 + ["x"])
