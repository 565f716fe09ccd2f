"""The students' training pool: the labelled store's rows first, then the test split's usable
clips as unlabeled rows (label -1, fold -1; the test split's own labels unread)."""

from types import SimpleNamespace

import numpy as np
import pandas as pd

from fsd.distill.pool import StudentPool
from fsd.distill.targets import UNLABELED, fold_teacher_rows, unlabeled_rows


def _split(names, label_ids, folds, frames, ok=None, offset=0.0):
    index = pd.DataFrame({"fname": names, "label": [f"c{i}" for i in label_ids],
                          "label_id": label_ids, "fold": folds, "verified": False,
                          "offset": 0, "frames": frames, "seconds": np.array(frames) * 0.01})
    if ok is not None:
        index["ok"] = ok
    mels = [np.full((max(f, 1), 4), offset + i, np.float32) for i, f in enumerate(frames)]
    return SimpleNamespace(index=index, labels=["c0", "c1"], meta={"crop_min": 5},
                           logmel=lambda i: mels[i],
                           summary=np.arange(len(names) * 3, dtype=np.float32).reshape(-1, 3)
                           + offset)


def test_the_pool_appends_the_usable_test_clips_unlabeled():
    train = _split(["a", "b", "c", "d"], [0, 1, 0, 1], [0, 0, 1, 1], [10, 12, 14, 16])
    test = _split(["t0", "t1", "t2", "t3"], [1, 0, 1, 0], [-1] * 4, [8, 0, 9, 7],
                  ok=[True, True, True, False], offset=100.0)
    pool = StudentPool(train, test)
    assert len(pool) == 6 and pool.index["fname"].tolist() == ["a", "b", "c", "d", "t0", "t2"]
    # the labelled rows keep their rows, labels and folds; the test ones have neither
    assert pool.index["label_id"].tolist() == [0, 1, 0, 1, UNLABELED, UNLABELED]
    assert pool.index["fold"].tolist() == [0, 0, 1, 1, -1, -1]
    assert pool.index.loc[4:, "label"].tolist() == ["", ""]
    assert list(pool.unlabeled_rows) == [4, 5]
    assert list(unlabeled_rows(pool.index["label_id"])) == [4, 5]
    # the honest split still never puts an unlabeled row among a fold's scored rows
    assert list(fold_teacher_rows(pool.index["fold"].to_numpy(), 0)[1]) == [0, 1]
    np.testing.assert_array_equal(pool.logmel(1), train.logmel(1))
    np.testing.assert_array_equal(pool.logmel(5), test.logmel(2))  # t2: t1 has no frame
    np.testing.assert_array_equal(pool.summary[:4], train.summary)
    np.testing.assert_array_equal(pool.summary[4:], test.summary[[0, 2]])
    assert pool.labels == ["c0", "c1"] and pool.meta == {"crop_min": 5}
