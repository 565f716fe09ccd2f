"""The clips a student trains on: the labelled store's and, with ``distill.unlabeled: test``,
the dataset's test split as unlabeled clips.

:class:`StudentPool` is a feature source (``fsd.train.batches.FeatureSource``) over both: the
labelled store's rows first, in their order (so its row numbers, folds and out-of-fold
predictions keep their meaning), then every test clip that has a log-mel, with ``label_id``
-1 (:data:`fsd.distill.targets.UNLABELED`), ``fold`` -1 and no label: the test split's own
labels, where the dataset has them, are never read. Such a row only ever gets a teacher's
soft target (:func:`fsd.distill.targets.mix_targets`); no score is taken on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsd.distill.targets import UNLABELED


class StudentPool:
    """``store``'s rows, then ``unlabeled``'s usable rows (``frames`` > 0 and ``ok``)."""

    def __init__(self, store, unlabeled):
        self.store, self.unlabeled = store, unlabeled
        tindex = unlabeled.index
        ok = tindex["frames"].to_numpy(np.int64) > 0
        if "ok" in tindex:
            ok &= tindex["ok"].astype(bool).to_numpy()
        self.extra = np.flatnonzero(ok)  # the test split's rows, in pool order
        self.n_labelled = len(store.index)
        tail = pd.DataFrame({"fname": tindex["fname"].astype(str).to_numpy()[self.extra],
                             "label": "", "label_id": UNLABELED, "fold": -1, "verified": True,
                             "offset": 0,
                             "frames": tindex["frames"].to_numpy(np.int64)[self.extra]})
        if "seconds" in tindex:
            tail["seconds"] = tindex["seconds"].to_numpy()[self.extra]
        self.index = pd.concat([store.index, tail], ignore_index=True)
        self.labels = list(store.labels)
        self.meta = dict(getattr(store, "meta", {}) or {})
        self._summary: np.ndarray | None = None

    def logmel(self, i: int) -> np.ndarray:
        i = int(i)
        if i < self.n_labelled:
            return self.store.logmel(i)
        return self.unlabeled.logmel(int(self.extra[i - self.n_labelled]))

    @property
    def summary(self) -> np.ndarray:
        """Both splits' summary features, one row per pool row (read once, when asked)."""
        if self._summary is None:
            extra = np.asarray(self.unlabeled.summary)[self.extra]
            self._summary = np.concatenate([np.asarray(self.store.summary), extra])
        return self._summary

    @property
    def unlabeled_rows(self) -> np.ndarray:
        return np.arange(self.n_labelled, len(self.index))

    def __len__(self) -> int:
        return len(self.index)
