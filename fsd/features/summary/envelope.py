"""Set 2 of the summary features (12): envelope run widths above 5% and 25% of its peak,
attack and release times, zero crossings; and the run-width statistics set 3 reuses."""

from __future__ import annotations

import numba
import numpy as np

# The original's envelope window (not a recipe parameter anybody tunes).
_ENVELOPE_WINDOW = 2000


def _run_widths(w: np.ndarray) -> list[float]:
    """The original's ``get_width``: log1p mean/std/max of runs of True, and their count."""
    w = np.asarray(w, dtype=bool)
    edges = np.diff(np.concatenate(([0], w.view(np.int8), [0])))
    return _width_stats(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def _width_stats(z: np.ndarray) -> list[float]:
    """:func:`_run_widths` from the run widths themselves (4 zeros when there are none)."""
    if z.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    z = z.astype(np.float64)
    return [float(np.log1p(z.mean())), float(np.log1p(z.std())), float(np.log1p(z.max())),
            float(len(z))]


def _set2(x: np.ndarray) -> list[float]:
    """Envelope runs, attack/release and zero crossings (module docstring), in two passes."""
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    win = min(_ENVELOPE_WINDOW, len(x))
    rm, top, attack, release, crossings = _set2_scan(x, win)
    widths = np.empty(len(rm) // 2 + 1, dtype=np.int64)
    sound = []
    for share in (0.05, 0.25):
        sound += _width_stats(widths[:_runs_above(rm, share * top, widths)])
    return sound + [float(np.log1p(attack)), float(np.log1p(release)),
                    float(np.log1p(crossings)), crossings / len(x)]


@numba.njit(cache=True, nogil=True)
def _set2_scan(x, win):  # pragma: no cover - compiled
    # Pass 1: the float64 running sum of x**2 (sequential, as np.cumsum adds), the envelope
    # rm[i] = (csum[i + win] - csum[i]) / win, its peak, and the crossings x[i] * x[i+1] <= 0.
    n = x.shape[0]
    m = n - win + 1
    rm = np.empty(m, dtype=np.float64)
    csum = np.empty(n + 1, dtype=np.float64)
    csum[0] = 0.0
    acc = 0.0
    crossings = 0
    for i in range(n):
        v = np.float64(x[i])
        acc += v * v
        csum[i + 1] = acc
        if i > 0 and np.float64(x[i - 1]) * v <= 0:
            crossings += 1
    top = -np.inf
    for i in range(m):
        r = (csum[i + win] - csum[i]) / win
        rm[i] = r
        top = max(top, r)
    # Pass 2: the attack (first sample above 99% of the peak) and the release (first sample
    # after the attack below 20%; len(rm) if none).
    t99, t20 = 0.99 * top, 0.2 * top
    attack = -1
    release = m
    for i in range(m):
        r = rm[i]
        if attack < 0 and r > t99:
            attack = i
        elif attack >= 0 and i > attack and r < t20:
            release = i
            break
    if attack < 0 or not top > 0:
        # np.argmax of an all-False mask is 0, and the original used 0 when the peak is 0
        attack = 0
        release = m
        for i in range(1, m):
            if rm[i] < t20:
                release = i
                break
    return rm, top, attack, release, crossings


@numba.njit(cache=True, nogil=True)
def _runs_above(rm, threshold, widths):  # pragma: no cover - compiled
    # The lengths of the runs of rm > threshold, in order, into widths; returns their count.
    n = 0
    run = 0
    for r in rm:
        if r > threshold:
            run += 1
        elif run:
            widths[n] = run
            n += 1
            run = 0
    if run:
        widths[n] = run
        n += 1
    return n
