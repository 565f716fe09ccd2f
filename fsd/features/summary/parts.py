"""Set 4 of the summary features (72): mean, std, min, max of 1, 2 and 3 parts of the raw
samples, their magnitude and their first difference."""

from __future__ import annotations

import numpy as np


def _part_stats(data: np.ndarray, n: int) -> list[float]:
    """The original's ``calc_part_features``: mean, std, min, max of n parts (see module doc)."""
    data = np.asarray(data, dtype=np.float64)
    size = len(data)
    step = size // n
    out: list[float] = []
    if step == 0:
        return [0.0] * (4 * n)
    for j in range(n):
        i = size - 1 if j == n - 1 else j * step
        seg = data[i : i + step]
        out += [float(seg.mean()), float(seg.std()), float(seg.min()), float(seg.max())]
    return out


def _set4(x: np.ndarray) -> list[float]:
    x = np.asarray(x, dtype=np.float64)
    series = (x, np.abs(x), np.diff(x))
    out: list[float] = []
    for n in (1, 2, 3):
        for data in series:
            out += _part_stats(data, n)
    return out
