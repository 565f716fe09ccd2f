"""Where a fixed-length view of a clip starts (crop or padding offset).

The views themselves, the batched forward passes and the geometric mean live in
:mod:`fsd.model.tta`, which validation (one model) and the ensemble (all folds) share.
"""

from __future__ import annotations

import numpy as np


def crop_offsets(frames: np.ndarray, length: int, position: np.ndarray | None) -> np.ndarray:
    """Start offsets for fitting clips of ``frames`` into ``length``.

    For a clip at least ``length`` long the offset is where the crop starts; for a shorter one
    it is where the clip is placed inside the zero-padded window. ``position`` in [0, 1) picks
    uniformly among the ``|frames - length| + 1`` choices; ``None`` takes the centre.
    """
    slack = np.abs(np.asarray(frames, dtype=np.int64) - length)
    if position is None:
        return slack // 2
    return np.minimum((np.asarray(position) * (slack + 1)).astype(np.int64), slack)
