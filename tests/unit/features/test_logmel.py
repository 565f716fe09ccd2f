"""The log-mel input: shape, hop count, scaling and values against librosa computed directly."""

from __future__ import annotations

import librosa
import numpy as np
import pytest

from fsd.config import LogMelConfig
from fsd.features.logmel import logmel, mel_basis, resample

CFG = LogMelConfig()


def _noisy_tone(seconds: float, sr: int = 44100, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    y = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def _librosa_reference(y22: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(y=y22, sr=22050, n_fft=1764, hop_length=220, n_mels=64,
                                         fmin=0.0, fmax=11025.0, power=2.0, pad_mode="reflect")
    db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=80.0)
    return ((db + 90.5) / (39.21 + 90.5)).T


def test_shape_time_first_and_hop_count():
    y = _noisy_tone(1.0)
    out = logmel(y, 44100, CFG)
    n22 = len(resample(y, 44100, 22050))
    assert n22 == 22050
    assert out.shape == (1 + n22 // 220, 64)  # centred frames: one per hop, plus one
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


def test_values_match_librosa_on_the_same_resampled_signal():
    y = _noisy_tone(2.0)
    y22 = resample(y, 44100, 22050)
    ours = logmel(y, 44100, CFG)
    ref = _librosa_reference(y22)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_input_already_at_the_logmel_rate_is_not_resampled():
    y22 = _noisy_tone(1.0, sr=22050)
    np.testing.assert_allclose(logmel(y22, 22050, CFG), _librosa_reference(y22), atol=2e-5)


def test_scaled_range_and_top_db_floor():
    out = logmel(_noisy_tone(1.5), 44100, CFG)
    span = 80.0 / (CFG.norm_max - CFG.norm_min)
    assert out.max() <= 1.0 and out.min() >= -0.05
    assert out.min() >= out.max() - span - 1e-6  # 80 dB below the clip's peak at most


def test_mel_basis_is_slaney_and_cached():
    a = mel_basis(22050, 1764, 64, 0.0, 11025.0)
    assert a is mel_basis(22050, 1764, 64, 0.0, 11025.0)
    ref = librosa.filters.mel(sr=22050, n_fft=1764, n_mels=64, fmin=0.0, fmax=11025.0, norm="slaney")
    np.testing.assert_allclose(a, ref, rtol=1e-6)
    with pytest.raises(ValueError):
        a[0, 0] = 1.0  # shared between calls: read-only


@pytest.mark.parametrize("seconds", [0.0005, 0.01, 0.05, 0.3])
def test_very_short_clips_still_give_frames(seconds):
    out = logmel(_noisy_tone(seconds), 44100, CFG)
    assert out.shape[0] >= 1 and out.shape[1] == 64
    assert np.isfinite(out).all()


def test_float16_storage_error_is_negligible():
    out = logmel(_noisy_tone(3.0), 44100, CFG)
    err = np.abs(out.astype(np.float16).astype(np.float32) - out)
    assert err.max() < 2.5e-4  # < 0.03 dB on the 129.7 dB scale


def test_rejects_multichannel_and_handles_empty():
    with pytest.raises(ValueError, match="mono"):
        logmel(np.zeros((100, 2), np.float32), 44100, CFG)
    assert logmel(np.zeros(0, np.float32), 44100, CFG).shape == (0, 64)


def test_the_log_mel_uses_the_configured_resampler():
    from fsd.config import load_config
    from fsd.features.extract import features_from_waveform

    rng = np.random.default_rng(0)
    y = (0.3 * rng.standard_normal(44100)).astype(np.float32)
    soxr_cfg = load_config(None, ["summary.enabled=false"])
    kaiser_cfg = load_config(None, ["summary.enabled=false", "audio.resample_type=kaiser_best"])
    a = features_from_waveform(y, 44100, soxr_cfg).logmel
    b = features_from_waveform(y, 44100, kaiser_cfg).logmel
    np.testing.assert_array_equal(a, logmel(y, 44100, soxr_cfg.logmel, "soxr_hq"))
    np.testing.assert_array_equal(b, logmel(y, 44100, kaiser_cfg.logmel, "kaiser_best"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.abs(a - b).mean() < 0.01  # two good resamplers: close, not equal
