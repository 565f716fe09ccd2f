"""Set 1 of the summary features: the time series of one shared magnitude STFT (mel, MFCC,
chroma, contrast, roll-off, centroid, bandwidth) and the zero-crossing rate, and the five
statistics taken of each row (see the package docstring for the layout and the quirks kept)."""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

N_CHROMA = 12
N_CONTRAST = 7

# piptrack defaults used by librosa.estimate_tuning
_PIP_FMIN, _PIP_FMAX, _PIP_THRESHOLD = 150.0, 4000.0, 0.1


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


@lru_cache(maxsize=8)
def _dct_basis(n_bins: int, n_mfcc: int) -> np.ndarray:
    """Rows of the orthonormal DCT-II (what scipy.fftpack.dct(norm='ortho') applies)."""
    k = np.arange(n_mfcc)[:, None]
    n = np.arange(n_bins)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_bins)) * np.sqrt(2.0 / n_bins)
    basis[0] /= np.sqrt(2.0)
    return basis.astype(np.float32)


@lru_cache(maxsize=256)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    import librosa

    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=N_CHROMA).astype(
        np.float32
    )


@lru_cache(maxsize=8)
def _fft_freqs(sr: int, n_fft: int) -> np.ndarray:
    return np.fft.rfftfreq(n_fft, d=1.0 / sr)


def _row_stats(F: np.ndarray) -> np.ndarray:
    """[mean, std, skew, max, min] over time (axis 1) for each row, concatenated per stat.

    Population statistics as numpy/scipy compute them; skew follows scipy.stats.skew
    (bias=True), including its rule that a (numerically) constant row has no skew, which is
    then 0 instead of NaN.
    """
    F = np.asarray(F, dtype=np.float64)
    rows = F.shape[0]
    if F.shape[1] == 0:
        return np.zeros(5 * rows)
    mean = F.mean(axis=1)
    dev = F - mean[:, None]
    dev2 = dev * dev
    m2 = dev2.mean(axis=1)
    m3 = (dev2 * dev).mean(axis=1)
    constant = m2 <= (np.finfo(np.float64).resolution * mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(constant | (m2 <= 0), 0.0, m3 / np.maximum(m2, 1e-300) ** 1.5)
    out = np.concatenate([mean, np.sqrt(m2), skew, F.max(axis=1), F.min(axis=1)])
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    import librosa

    return librosa.stft(x, n_fft=n_fft, hop_length=hop, center=True, pad_mode="reflect")


def _tunings(S: np.ndarray, sr: int, n_fft: int, bins_per_octave: tuple[int, ...]) -> list[float]:
    """``librosa.estimate_tuning(S=S, sr=sr, bins_per_octave=b)`` for each b, from one piptrack.

    piptrack only reports peaks between 150 Hz and 4 kHz, and every quantity it uses is local
    in frequency except the per-frame peak threshold, so it is evaluated on that band alone.
    """
    freqs = _fft_freqs(sr, n_fft)
    n_bins = S.shape[0]
    fmax = min(_PIP_FMAX, sr / 2)
    inband = np.flatnonzero((freqs >= _PIP_FMIN) & (freqs < fmax))
    if inband.size == 0 or S.shape[1] == 0:
        return [0.0 for _ in bins_per_octave]
    lo, hi = int(inband[0]), int(inband[-1]) + 1
    a, b = max(lo - 1, 0), min(hi + 1, n_bins)
    blk = S[a:b]
    ref = _PIP_THRESHOLD * S.max(axis=0)
    prev = blk[:-2]
    cur = blk[1:-1]
    nxt = blk[2:]
    # rows of `cur` are bins a+1 .. b-2
    pa = nxt + prev - 2 * cur
    pb = (nxt - prev) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(pb) >= np.abs(pa), 0, -pb / pa).astype(S.dtype)
    thr = blk * (blk > ref)
    tc, tp, tn = thr[1:-1], thr[:-2], thr[2:]
    peak = (tc > tp) & (tc >= tn)
    bins = np.arange(a + 1, b - 1)
    keep = (bins >= lo) & (bins < hi)
    peak &= keep[:, None]
    rows, cols = np.nonzero(peak)
    if rows.size == 0:
        return [0.0 for _ in bins_per_octave]
    shift_p = shift[rows, cols]
    pitch = ((bins[rows] + shift_p) * float(sr) / n_fft).astype(S.dtype)
    avg = pb[rows, cols]
    mag = cur[rows, cols] + (0.5 * avg * shift_p).astype(S.dtype)
    positive = pitch > 0
    threshold = np.median(mag[positive]) if positive.any() else 0.0
    freqs_sel = pitch[(mag >= threshold) & positive]
    freqs_sel = freqs_sel[freqs_sel > 0]
    out = []
    for bpo in bins_per_octave:
        if freqs_sel.size == 0:
            out.append(0.0)
            continue
        # librosa.hz_to_octs(f) = log2(f / (440 / 16))
        residual = np.mod(bpo * np.log2(freqs_sel / (440.0 / 16)), 1.0)
        residual[residual >= 0.5] -= 1.0
        edges = np.linspace(-0.5, 0.5, 101)
        counts, tun = np.histogram(residual, edges)
        out.append(float(tun[np.argmax(counts)]))
    return out


def _chroma(S: np.ndarray, sr: int, n_fft: int, tuning: float) -> np.ndarray:
    raw = _chroma_basis(sr, n_fft, tuning) @ S
    peak = raw.max(axis=0)
    peak[peak < np.finfo(raw.dtype).tiny] = 1.0
    return raw / peak


def _contrast(S: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    import librosa

    return librosa.feature.spectral_contrast(S=S, sr=sr, n_fft=n_fft)


def _shape_features(S: np.ndarray, sr: int, n_fft: int) -> tuple[np.ndarray, ...]:
    """Roll-off (85%), centroid and bandwidth (p=2) as librosa computes them, without loops."""
    freqs = _fft_freqs(sr, n_fft)
    total = np.cumsum(S, axis=0)  # float32, in librosa's order, so roll-off ties match
    reached = total >= (0.85 * total[-1])[None, :]
    rolloff = freqs[np.argmax(reached, axis=0)]
    S64 = S.astype(np.float64)
    energy = S64.sum(axis=0)
    norm = np.where(energy < np.finfo(S.dtype).tiny, 1.0, energy)
    share = energy / norm
    first = (freqs @ S64) / norm
    second = ((freqs * freqs) @ S64) / norm
    centroid = first
    var = second - 2 * centroid * first + centroid * centroid * share
    bandwidth = np.sqrt(np.maximum(var, 0.0))
    return rolloff[None, :], centroid[None, :], bandwidth[None, :]


def _zcr(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """librosa.feature.zero_crossing_rate (edge padding, |x| <= 1e-10 counts as 0, zero = +)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_frames = 1 + (len(x) + 2 * (frame // 2) - frame) // hop
    out = np.zeros(max(n_frames, 0), dtype=np.float64)
    if n_frames > 0:
        _zcr_frames(x, frame, hop, out)
    return out[None, :]


@numba.njit(cache=True, nogil=True)
def _zcr_frames(x, frame, hop, out):  # pragma: no cover - compiled
    # One pass over the edge-padded signal (never built): cross[k] counts sign changes between
    # padded samples (j-1, j) for j <= k; a frame starting at s holds the changes (s, s+frame-1]
    # (its first sample has no predecessor: librosa's pad=False).
    n = x.shape[0]
    half = frame // 2
    total = n + 2 * half
    thr = np.float32(1e-10)  # float32, as numpy compares the float32 clip with 1e-10
    cross = np.empty(total, dtype=np.int64)
    count = 0
    prev = False
    for k in range(total):
        j = min(max(k - half, 0), n - 1)
        v = x[j]
        neg = v < 0 and not abs(v) <= thr
        if k > 0 and neg != prev:
            count += 1
        cross[k] = count
        prev = neg
    for f in range(out.shape[0]):
        s = f * hop
        out[f] = (cross[s + frame - 1] - cross[s]) / frame
