"""load_audio on real files written into tmp_path: what it returns, and every way it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from fsd.config import AudioConfig
from fsd.data.audio import AudioError, decode, load_audio

SR = 44100
NO_TRIM = AudioConfig(trim=False)


def dominant_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spec.argmax()])


# --- refusals --------------------------------------------------------------------------


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_audio(path, AudioConfig())
    with pytest.raises(AudioError, match="empty file"):
        load_audio(b"", AudioConfig())


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav", AudioConfig())


def test_header_only_wav_has_no_samples(write_audio):
    path = write_audio("none.wav", np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(path, AudioConfig())


def test_all_silent_clip_is_refused(write_audio):
    path = write_audio("silent.wav", np.zeros(SR, dtype=np.float32))
    with pytest.raises(AudioError, match="silent"):
        load_audio(path, AudioConfig())


def test_61_second_clip_is_too_long(write_audio, tone):
    # 8 kHz keeps the file small; the refusal comes from the header, before decoding.
    path = write_audio("long.wav", tone(61, sr=8000), sr=8000)
    with pytest.raises(AudioError, match=r"too long: 61\.0 s > audio.max_seconds 60 s"):
        load_audio(path, AudioConfig())
    with pytest.raises(AudioError, match="too long"):
        decode(path, max_seconds=60)


@pytest.mark.parametrize("content", [
    np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    b"fname,label\nthis is a CSV, not audio\n" * 20,
])
def test_undecodable_bytes_are_refused(tmp_path, content):
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match="not decodable"):
        load_audio(path, AudioConfig())
    with pytest.raises(AudioError, match="not decodable"):
        load_audio(content, AudioConfig())


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples_are_refused(write_audio, tone, bad):
    y = tone(0.5)
    y[1000] = bad
    path = write_audio("nan.wav", y, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(path, AudioConfig())


def test_too_short_after_trim_is_refused(write_audio, tone):
    y = np.concatenate([np.zeros(SR), tone(0.1), np.zeros(SR)])
    path = write_audio("blip.wav", y)
    with pytest.raises(AudioError, match="too short"):
        load_audio(path, AudioConfig(min_seconds=0.5))


def test_corrupt_headers_only_ever_raise_audio_error(write_audio, tone):
    """Flipped header bytes either decode or raise AudioError: never another exception."""
    good = write_audio("ok.wav", tone(0.2)).read_bytes()
    rng = np.random.default_rng(1)
    outcomes = set()
    for _ in range(60):
        data = bytearray(good)
        for pos in rng.integers(0, 44, rng.integers(1, 5)):
            data[pos] = int(rng.integers(0, 256))
        try:
            y = load_audio(bytes(data), AudioConfig())
            assert y.dtype == np.float32 and np.isfinite(y).all()
            outcomes.add("ok")
        except AudioError:
            outcomes.add("refused")
    assert "refused" in outcomes


# --- accepted clips, with their values checked --------------------------------------------


def test_short_clip_is_accepted(write_audio, tone):
    y = load_audio(write_audio("short.wav", tone(0.3)), AudioConfig())
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - int(0.3 * SR)) <= 1
    assert np.sqrt(np.mean(y ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_30_second_clip_is_accepted(write_audio, tone):
    y = load_audio(write_audio("thirty.wav", tone(30)), AudioConfig())
    assert len(y) == 30 * SR


def test_silence_is_trimmed(write_audio, tone):
    sig = tone(1.0)
    path = write_audio("padded.wav", np.concatenate([np.zeros(SR), sig, np.zeros(SR // 2)]))
    y = load_audio(path, AudioConfig())
    # librosa.effects.trim works in 512-sample hops with 2048-sample frames.
    assert SR <= len(y) <= SR + 2 * 2048
    assert len(load_audio(path, NO_TRIM)) == int(2.5 * SR)


def test_truncated_wav_decodes_the_prefix(tmp_path, write_audio, tone):
    """The header promises 2 s; half the file is there: the present frames are used."""
    full = tone(2.0)
    data = write_audio("full.wav", full).read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    y = load_audio(cut, NO_TRIM)
    assert abs(len(y) - SR) < 100  # half of the data chunk, less half the 44-byte header
    np.testing.assert_allclose(y, full[: len(y)], atol=1 / 32768 + 1e-6)


def test_stereo_is_mixed_to_mono(write_audio, tone):
    stereo = tone(0.5, channels=2)  # right = left / 2
    y = load_audio(write_audio("stereo.wav", stereo, subtype="FLOAT"), NO_TRIM)
    assert y.shape == (int(0.5 * SR),)
    np.testing.assert_allclose(y, 0.75 * stereo[:, 0], atol=1e-6)


@pytest.mark.parametrize("subtype, atol", [
    ("PCM_U8", 1 / 128), ("PCM_16", 1 / 32768), ("PCM_24", 2 ** -23),
    ("PCM_32", 2 ** -31 + 1e-7), ("FLOAT", 1e-7),
])
def test_sample_formats_decode_to_the_same_values(write_audio, tone, subtype, atol):
    sig = tone(0.25)
    y = load_audio(write_audio(f"{subtype}.wav", sig, subtype=subtype), NO_TRIM)
    assert y.dtype == np.float32 and len(y) == len(sig)
    np.testing.assert_allclose(y, sig, atol=atol + 1e-7)


@pytest.mark.parametrize("rate", [8000, 48000, 96000])
def test_other_rates_are_resampled_to_44k1(write_audio, tone, rate):
    seconds = 0.5
    y = load_audio(write_audio(f"r{rate}.wav", tone(seconds, sr=rate), sr=rate), NO_TRIM)
    assert abs(len(y) - seconds * SR) <= 1
    assert dominant_hz(y, SR) == pytest.approx(440, abs=3)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_flac_decodes_losslessly(write_audio, tone):
    sig = tone(0.5)
    y = load_audio(write_audio("a.flac", sig), NO_TRIM)
    np.testing.assert_allclose(y, sig, atol=1 / 32768 + 1e-6)


def test_ogg_decodes_close_to_the_original(write_audio, tone):
    sig = tone(0.5)
    y = load_audio(write_audio("a.ogg", sig), NO_TRIM)
    assert len(y) == len(sig)
    assert np.corrcoef(y, sig)[0, 1] > 0.99  # lossy, but the same waveform
    assert dominant_hz(y, SR) == pytest.approx(440, abs=3)


def test_bytes_and_path_give_the_same_waveform(write_audio, tone):
    path = write_audio("b.wav", np.concatenate([np.zeros(4000, np.float32), tone(0.4)]))
    from_path = load_audio(path, AudioConfig())
    from_bytes = load_audio(path.read_bytes(), AudioConfig())
    np.testing.assert_array_equal(from_path, from_bytes)


def test_decode_returns_frames_by_channels(write_audio, tone):
    data, rate = decode(write_audio("s.wav", tone(0.1, sr=22050, channels=2), sr=22050))
    assert rate == 22050 and data.shape == (2205, 2) and data.dtype == np.float32
