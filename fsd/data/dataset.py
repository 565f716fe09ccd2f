"""One dataset interface over three sources: FSDKaggle2018's layout, a folder + CSV, the sample."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from fsd.data.rejects import Reject

TRAIN_COLUMNS = ["fname", "path", "label", "verified", "fold"]
TEST_COLUMNS = ["fname", "path", "label", "usage"]


@dataclass
class Dataset:
    """Clips with labels, ready to featurize.

    ``train``: one row a usable clip: fname (unique), path (absolute), label (a name in
    ``labels``), verified (bool), fold (int; -1 where the dataset gives none).
    ``test``: optional unlabelled (or scored) clips: fname, path, label ('' if unknown),
    usage (Public/Private/Ignored or '').
    ``rejects``: metadata rows that were left out, with reasons.
    """

    name: str
    train: pd.DataFrame
    labels: list[str]
    test: pd.DataFrame | None = None
    rejects: list[Reject] = field(default_factory=list)

    def fingerprint(self) -> str:
        """A hash of what the clips are (names, labels, folds, file sizes and mtimes)."""
        raise NotImplementedError


def load_dataset(cfg) -> Dataset:  # cfg: fsd.config.Config
    """Dispatch on ``cfg.data.source``."""
    raise NotImplementedError
