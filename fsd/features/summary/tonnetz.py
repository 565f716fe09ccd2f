"""Set 1's tonnetz rows: of the set-1 chroma (``stft_chroma``), or of the HPSS harmonic part's
CQT chroma computed from the shared STFT (``harmonic_cqt``: see "Speed" in the package
docstring)."""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from fsd.features.summary.spectral import N_CHROMA, _tunings

N_TONNETZ = 6

# Tonnetz: CQT of the harmonic part (librosa chroma_cqt defaults).
_CQT_BPO = 36
_CQT_OCTAVES = 7
_CQT_MIN_RATE = 11025  # the harmonic signal is decimated down to no less than this
_HPSS_KERNEL = 31


@numba.njit(cache=True, nogil=True)
def _median_rows(a, width, out):  # pragma: no cover - compiled
    # Sliding median along axis 1 with scipy.ndimage's 'reflect' boundary (d c b a | a b c d),
    # keeping the window sorted: each step deletes the outgoing value and inserts the new one
    # in a single shift, O(width) without re-sorting.
    n_rows, n = a.shape
    half = width // 2
    buf = np.empty(width, dtype=a.dtype)
    padded = np.empty(n + 2 * half, dtype=a.dtype)
    for r in range(n_rows):
        for i in range(n + 2 * half):
            j = i - half
            while j < 0 or j >= n:  # reflect again for rows shorter than the window
                if j < 0:
                    j = -j - 1
                if j >= n:
                    j = 2 * n - j - 1
            padded[i] = a[r, j]
        for i in range(width):
            buf[i] = padded[i]
        buf.sort()
        out[r, 0] = buf[half]
        for i in range(1, n):
            old = padded[i - 1]
            new = padded[i + width - 1]
            q = np.searchsorted(buf, old)
            if new >= old:
                while q + 1 < width and buf[q + 1] < new:
                    buf[q] = buf[q + 1]
                    q += 1
            else:
                while q > 0 and buf[q - 1] > new:
                    buf[q] = buf[q - 1]
                    q -= 1
            buf[q] = new
            out[r, i] = buf[half]


def median_filter_rows(a: np.ndarray, width: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(a, size=(1, width), mode='reflect')`` (exact), ~5x faster."""
    a = np.ascontiguousarray(a)
    out = np.empty_like(a)
    if a.size:
        _median_rows(a, width, out)
    return out


def harmonic_mask(S: np.ndarray, n_rows: int, kernel: int = _HPSS_KERNEL) -> np.ndarray:
    """librosa's HPSS soft mask (power 2, margin 1) for the lowest ``n_rows`` bins of S.

    Equal to ``librosa.decompose.hpss(S, mask=True)[0][:n_rows]``: the frequency-direction
    median of a bin only needs ``kernel // 2`` bins above it.
    """
    import librosa

    need = min(S.shape[0], n_rows + kernel // 2)
    sub = S[:need]
    harm = median_filter_rows(sub[:n_rows], kernel)  # along time: rows are independent
    perc = median_filter_rows(sub.T, kernel).T[:n_rows]
    return librosa.util.softmask(harm, perc, power=2.0, split_zeros=True)


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    # librosa.filters._relative_bandwidth (private there)
    logf = np.log2(freqs)
    bpo = np.empty_like(freqs)
    bpo[0] = 1 / (logf[1] - logf[0])
    bpo[-1] = 1 / (logf[-1] - logf[-2])
    bpo[1:-1] = 2 / (logf[2:] - logf[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _cqt_freqs(tuning: float) -> np.ndarray:
    import librosa

    fmin = librosa.note_to_hz("C1") * 2.0 ** (tuning / _CQT_BPO)
    return fmin * 2.0 ** (np.arange(_CQT_OCTAVES * _CQT_BPO) / _CQT_BPO)


@lru_cache(maxsize=256)
def _cqt_octave_basis(sr: float, tuning: float):
    """Sparse FFT basis of the top octave of librosa's CQT (its ``__vqt_filter_fft``), cached.

    librosa rebuilds the bases of all 7 octaves on every call (~75% of its CQT time). With
    equal temperament every octave's filters, relative to that octave's sample rate, are the
    top octave's, so one basis per tuning serves all octaves (scaled by sqrt(2**octave)).
    The construction is librosa's (``filters.wavelet`` + ``util.sparsify_rows``), vectorised:
    each tuning seen costs ~1 ms instead of ~25 ms.
    """
    import scipy.sparse
    from librosa.filters import wavelet_lengths

    freqs_all = _cqt_freqs(tuning)
    alpha_all = _relative_bandwidth(freqs_all)
    freqs, alpha = freqs_all[-_CQT_BPO:], alpha_all[-_CQT_BPO:]
    lengths, _ = wavelet_lengths(freqs=freqs, sr=sr, window="hann", filter_scale=1, gamma=0,
                                 alpha=alpha)
    n_fft = int(2.0 ** np.ceil(np.log2(lengths.max())))
    basis = np.zeros((len(freqs), n_fft), dtype=np.complex64)
    for i, (ilen, freq) in enumerate(zip(lengths, freqs)):
        t = np.arange(-ilen // 2, ilen // 2, dtype=float)
        n = len(t)
        # periodic Hann (scipy.signal.get_window('hann', n)), L1-normalised, centred
        win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        sig = np.exp(1j * 2 * np.pi * freq / sr * t) * win
        sig /= np.abs(sig).sum()
        left = (n_fft - n) // 2
        basis[i, left : left + n] = sig
    basis *= (lengths / float(n_fft))[:, None]
    fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    # sparsify_rows(quantile=0.01): drop each row's smallest magnitudes summing to < 1%
    mags = np.abs(fft_basis)
    mag_sort = np.sort(mags, axis=1)
    cumulative = np.cumsum(mag_sort / mags.sum(axis=1, keepdims=True), axis=1)
    cut = mag_sort[np.arange(len(mags)), np.argmin(cumulative < 0.01, axis=1)]
    keep = mags >= cut[:, None]
    rows, cols = np.nonzero(keep)
    sparse = scipy.sparse.csr_matrix((fft_basis[rows, cols], (rows, cols)), shape=fft_basis.shape,
                                     dtype=np.complex64)
    return sparse, n_fft


@lru_cache(maxsize=256)
def _cqt_scale(sr: float, tuning: float) -> np.ndarray:
    import librosa

    freqs = _cqt_freqs(tuning)
    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sr, window="hann", filter_scale=1, gamma=0,
        alpha=_relative_bandwidth(freqs),
    )
    return (1.0 / np.sqrt(lengths)).astype(np.float32)[:, None]


@lru_cache(maxsize=2)
def _cq_to_chroma() -> np.ndarray:
    import librosa

    return librosa.filters.cq_to_chroma(
        _CQT_OCTAVES * _CQT_BPO, bins_per_octave=_CQT_BPO, n_chroma=N_CHROMA
    ).astype(np.float32)


def cqt_magnitude(y: np.ndarray, sr: float, hop: int, tuning: float) -> np.ndarray:
    """``abs(librosa.cqt(y, sr, hop, n_bins=252, bins_per_octave=36, tuning))`` with cached bases.

    The shortcut needs every octave at half the previous rate (hop divisible by 2**6) and no
    early downsampling (sr below ~16.8 kHz for these bins); otherwise librosa computes it.
    """
    import librosa

    if hop % 2 ** (_CQT_OCTAVES - 1) or sr >= 16000:
        return np.abs(librosa.cqt(np.asarray(y, dtype=np.float32), sr=sr, hop_length=hop,
                                  n_bins=_CQT_OCTAVES * _CQT_BPO, bins_per_octave=_CQT_BPO,
                                  tuning=tuning))
    n = _CQT_BPO
    responses = []
    my_y, my_hop = np.asarray(y, dtype=np.float32), hop
    for octave in range(_CQT_OCTAVES):
        basis, n_fft = _cqt_octave_basis(float(sr), float(tuning))
        D = _stft_ones(my_y, n_fft, my_hop)
        responses.append(basis.dot(D) * np.float32(np.sqrt(2.0**octave)))
        if my_hop % 2 == 0:
            my_hop //= 2
            my_y = librosa.resample(my_y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
    n_frames = min(r.shape[1] for r in responses)
    C = np.empty((_CQT_OCTAVES * n, n_frames), dtype=np.complex64)
    end = C.shape[0]
    for r in responses:
        C[end - r.shape[0] : end] = r[:, :n_frames]
        end -= r.shape[0]
    return np.abs(C) * _cqt_scale(float(sr), float(tuning))


def _stft_ones(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``librosa.stft(y, n_fft, hop, window="ones", pad_mode="constant", dtype=complex64)``,
    frame-major: contiguous frames, one real FFT along the last axis per 256-frame block
    (librosa transforms along the strided axis in ~40-frame blocks: 1.5-1.9x the CPU time at
    these sizes). Equal to float32 rounding; the CQT is linear in it, so the tonnetz moves by
    rounding only (the tuning estimate, which can flip a histogram bin, keeps librosa's STFT)."""
    import scipy.fft

    padded = np.pad(np.asarray(y, dtype=np.float32), n_fft // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    out = np.empty((frames.shape[0], n_fft // 2 + 1), dtype=np.complex64)
    for start in range(0, frames.shape[0], 256):
        out[start:start + 256] = scipy.fft.rfft(frames[start:start + 256], axis=-1, workers=1)
    return out.T


def _decimation(sr: int, n_fft: int, hop: int) -> int:
    """The largest power of two that keeps the harmonic signal at >= 11.025 kHz (the CQT's
    top bin is ~4.1 kHz) and divides the STFT's size and hop: 4 at 44.1 kHz."""
    dec = 1
    while sr / (2 * dec) >= _CQT_MIN_RATE and n_fft % (2 * dec) == 0 and hop % (2 * dec) == 0:
        dec *= 2
    return dec


def tonnetz_from_chroma(chroma: np.ndarray) -> np.ndarray:
    import librosa

    return librosa.feature.tonnetz(chroma=chroma)


def harmonic_tonnetz(D: np.ndarray, S: np.ndarray, sr: int, n_fft: int, hop: int,
                     n_samples: int) -> np.ndarray:
    """Tonnetz (6, frames) of the HPSS harmonic part, from the clip's own STFT ``D``.

    Approximates ``librosa.feature.tonnetz(y=librosa.effects.harmonic(x), sr=sr)``.
    """
    import librosa

    dec = _decimation(sr, n_fft, hop)
    sub_fft = n_fft // dec
    n_rows = sub_fft // 2 + 1  # bins 0 .. sr/(2*dec)
    if S.shape[1] == 0:
        return np.zeros((N_TONNETZ, 0), dtype=np.float32)
    mask = harmonic_mask(S, n_rows)
    H = D[:n_rows] * mask
    H[-1] = 0  # the new Nyquist bin
    # The truncated spectrum inverted with a 1/dec-length transform is the harmonic signal
    # resampled to sr/dec (its amplitude scale is irrelevant: chroma is normalised).
    h = librosa.istft(H, n_fft=sub_fft, hop_length=hop // dec, window="hann", center=True,
                      length=max(n_samples // dec, 1))
    # Tuning as chroma_cqt estimates it: piptrack of the harmonic signal's own (zero-padded)
    # STFT. Same bin spacing as the full-rate STFT; |H| itself disagreed in half the clips.
    mag = np.abs(librosa.stft(h, n_fft=sub_fft, hop_length=hop // dec, pad_mode="constant"))
    (tuning,) = _tunings(mag, sr / dec, sub_fft, (_CQT_BPO,))
    C = cqt_magnitude(h, sr / dec, hop // dec, tuning)
    chroma = _cq_to_chroma() @ C
    np.maximum(chroma, 0.0, out=chroma)
    peak = chroma.max(axis=0)
    peak[peak < np.finfo(chroma.dtype).tiny] = 1.0
    return tonnetz_from_chroma(chroma / peak)
