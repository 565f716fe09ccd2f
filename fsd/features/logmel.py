"""The network's input: a log-mel spectrogram at 22.05 kHz, scaled by the recipe's fixed range.

Steps (``../shared/docs/seed-method.md``, "log-mel"): resample the loaded waveform to
``cfg.sample_rate``; mel power spectrogram (``n_fft`` 1764, hop 220, 64 Slaney-normalised mel
bands from ``fmin`` to ``fmax``, power 2); ``power_to_db(ref=1, amin=1e-10, top_db=80)``; then
``(x - norm_min) / (norm_max - norm_min)``, which maps the recipe's observed dB range
[-90.5, 39.21] onto about [0, 1]. The result is time-first: ``(frames, n_mels)`` float32 with
``frames = 1 + len(y_resampled) // hop_length``.

Choices against librosa 0.11's changed defaults:

- Padding: frames are centred with **reflect** padding, as librosa 0.6 did in 2018 (0.11
  pads with zeros by default). The two differ only in the first and last ~4 frames.
- Resampler: ``audio.resample_type``, by default soxr "HQ" instead of 2018's
  resampy ``kaiser_best``; it is ~80x faster. Over the 240 instrument clips the scaled
  log-mel moves by mean 6.5e-4; below 10 kHz (mel bands 0-60) by at most 0.0015 (0.2 dB).
  The top three bands (10-11 kHz) differ by up to 0.17 (mean 0.03 in the last band): soxr's
  anti-alias filter starts rolling off earlier. See ``benchmarks/README.md``.
- Mel filter banks are cached per parameter set, since librosa rebuilds them on every call.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

from fsd.config import LogMelConfig
from fsd.data.audio import resample


@lru_cache(maxsize=16)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style mel filter bank ``(n_mels, 1 + n_fft // 2)`` float32 (read-only, cached)."""
    import librosa

    basis = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney"
    ).astype(np.float32)
    basis.setflags(write=False)
    return basis


@lru_cache(maxsize=16)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window librosa uses (``get_window("hann", n_fft, fftbins=True)``)."""
    import scipy.signal

    win = scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)
    win.setflags(write=False)
    return win


# Frames per FFT call: large enough to amortise the call, small enough to stay in cache.
_STFT_BLOCK = 256


def stft_hann(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """``librosa.stft(y, n_fft, hop_length, window="hann", center=True, pad_mode="reflect")``
    (complex64, (bins, frames)), computed frame-major: contiguous frames, one real FFT along
    the last axis per block. librosa transforms along the strided frame axis in ~40-frame
    blocks, which is ~1.5-3x slower at n_fft 1764; the values agree to float32 rounding."""
    import scipy.fft

    y = np.asarray(y, dtype=np.float32)
    padded = np.pad(y, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    win = hann_window(n_fft)
    out = np.empty((frames.shape[0], n_fft // 2 + 1), dtype=np.complex64)
    for start in range(0, frames.shape[0], _STFT_BLOCK):
        block = frames[start:start + _STFT_BLOCK] * win
        out[start:start + _STFT_BLOCK] = scipy.fft.rfft(block, axis=-1, workers=1)
    return out.T


def power_spectrogram(y: np.ndarray, n_fft: int, hop_length: int, power: float = 2.0) -> np.ndarray:
    """``|STFT|**power`` with a Hann window and centred, reflect-padded frames: (bins, frames)."""
    spec = np.abs(stft_hann(y, n_fft, hop_length))
    if power == 1.0:
        return spec
    if power == 2.0:
        return np.square(spec, out=spec)
    return spec**power


def power_to_db(
    S: np.ndarray, amin: float = 1e-10, top_db: float | None = 80.0
) -> np.ndarray:
    """``10 log10(max(S, amin))`` with ``ref=1``, floored ``top_db`` below the clip's peak."""
    db = 10.0 * np.log10(np.maximum(S, np.float32(amin)))
    if top_db is not None and db.size:
        np.maximum(db, db.max() - np.float32(top_db), out=db)
    return db


def logmel(y: np.ndarray, sr: int, cfg: LogMelConfig, resample_type: str = "soxr_hq") -> np.ndarray:
    """The recipe's scaled log-mel spectrogram of ``y`` (mono, at ``sr``): (frames, n_mels) float32.

    ``resample_type`` is the resampler to ``cfg.sample_rate`` (``audio.resample_type``)."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"logmel expects a mono 1-D waveform, got shape {y.shape}")
    if y.size == 0:
        return np.zeros((0, cfg.n_mels), dtype=np.float32)
    y = resample(y, sr, cfg.sample_rate, resample_type)
    with warnings.catch_warnings():
        # clips shorter than one window are expected: reflect padding still frames them
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
        spec = power_spectrogram(y, cfg.n_fft, cfg.hop_length, cfg.power)
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, float(cfg.fmin), float(cfg.fmax))
    mel = basis @ spec  # (n_mels, frames)
    db = power_to_db(mel, cfg.amin, cfg.top_db)
    scaled = (db - np.float32(cfg.norm_min)) * np.float32(1.0 / (cfg.norm_max - cfg.norm_min))
    return np.ascontiguousarray(scaled.T, dtype=np.float32)
