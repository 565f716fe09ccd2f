"""Set 3 of the summary features (64): peak and shape numbers of the log1p mean magnitude
spectrum of 2000-sample windows, then 25 bins of its 20-bin running mean."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fsd.features.summary.envelope import _run_widths

_SPECTRUM_OFFSET = 100  # the original's windows start at sample 100
_SPECTRUM_BINS = 1000
_SMOOTH = 20
_SMOOTH_STEP = 40


@lru_cache(maxsize=4)
def _quad_pinv(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of y on [t, t**2] (t = 0..n-1) with intercept, as sklearn does it."""
    t = np.arange(n, dtype=np.float64)
    X = np.stack([t, t * t], axis=1)
    mean = X.mean(axis=0)
    return np.linalg.pinv(X - mean), mean


def _quad_fit(y: np.ndarray, t0: int = 0) -> list[float]:
    """Coefficients (t, t**2) and intercept of the least-squares quadratic through y."""
    y = np.asarray(y, dtype=np.float64)
    if t0 == 0 and len(y) >= 3:
        pinv, mean = _quad_pinv(len(y))
        coef = pinv @ (y - y.mean())
        return [float(coef[0]), float(coef[1]), float(y.mean() - coef @ mean)]
    t = np.arange(t0, t0 + len(y), dtype=np.float64)
    X = np.stack([t, t * t], axis=1)
    xm = X.mean(axis=0)
    coef = np.linalg.lstsq(X - xm, y - y.mean(), rcond=None)[0]
    return [float(coef[0]), float(coef[1]), float(y.mean() - coef @ xm)]


def _mean_spectrum(x: np.ndarray, window: int) -> np.ndarray:
    """log1p of the mean |FFT| of consecutive ``window``-sample frames from sample 100, first
    1000 bins (of the full FFT, as the original took them)."""
    import scipy.fft

    x = np.asarray(x, dtype=np.float64)
    n_win = len(range(_SPECTRUM_OFFSET, len(x), window)) - 1
    if n_win >= 1:
        frames = x[_SPECTRUM_OFFSET : _SPECTRUM_OFFSET + n_win * window].reshape(n_win, window)
    else:
        frames = np.zeros((1, window))
        frames[0, : min(len(x), window)] = x[:window]
    if window >= 2 * _SPECTRUM_BINS:
        mag = np.abs(scipy.fft.rfft(frames, axis=1))[:, :_SPECTRUM_BINS]  # half the work
    else:
        mag = np.abs(scipy.fft.fft(frames, axis=1))[:, :_SPECTRUM_BINS]
    m = np.log1p(mag.mean(axis=0))
    return np.pad(m, (0, _SPECTRUM_BINS - len(m)))


def _peaks(m: np.ndarray) -> list[float]:
    """The original's ``num_peaks`` (39 numbers) of the mean spectrum."""
    top = m.max()
    levels = (0.10, 0.20, 0.50, 0.90, 0.99)
    counts = [float(np.count_nonzero(m > c * top)) for c in levels]
    lead = int(np.argmax(m == top))
    widths: list[float] = []
    for c in levels:
        widths += _run_widths(m > c * top)
    power = m * m
    total = power.sum()
    f_sc = float(np.arange(len(m)) @ power / total) if total > 0 else 0.0
    low = np.flatnonzero(m < 0.10 * top)
    quad_w = [0.0, 0.0, 0.0]
    if low.size:
        left_side = low[low < lead]
        right_side = low[low > lead]
        left = int(left_side.max()) if left_side.size else 0
        right = int(right_side.min()) if right_side.size else 0
        if right - left > 2:
            quad_w = _quad_fit(m[left:right], left)
    s = float(m.sum())
    s2 = float(np.sqrt(power.sum()))
    integrals = [s, s / len(m), s2, s2 / len(m)]
    quad = _quad_fit(m)
    hf50 = float(np.count_nonzero(m[:50] >= 0.5 * top))
    hf90 = float(np.count_nonzero(m[:50] >= 0.9 * top))
    return [f_sc] + counts + [float(lead), hf50, hf90] + widths + quad + integrals + quad_w


def _set3(x: np.ndarray, window: int) -> list[float]:
    m = _mean_spectrum(x, window)
    smooth = np.convolve(m, np.ones(_SMOOTH) / _SMOOTH)[_SMOOTH - 1 :]
    return _peaks(m) + [float(v) for v in smooth[::_SMOOTH_STEP]]
